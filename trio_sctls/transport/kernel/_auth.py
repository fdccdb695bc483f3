"""SCTP-AUTH (RFC 4895) on kernel SCTP: the socket options behind ``auth=True``.

Before connect or listen, :func:`enable_auth` switches SCTP-AUTH on for the socket
(``SCTP_AUTH_SUPPORTED``; kernels before 5.1 only have the ``net.sctp.auth_enable``
sysctl, which must then be 1 before the socket is created), puts DATA and FORWARD TSN
in the list of chunks the peer must authenticate (``SCTP_AUTH_CHUNK``) and prefers
HMAC-SHA-256 as the sans-IO core does (``SCTP_HMAC_IDENT``). Linux does not refuse a peer without
SCTP-AUTH, so after the handshake :func:`require_peer_auth` asks whether the peer
announced it (``SCTP_PEER_AUTH_CHUNKS`` answers ``EACCES`` when not). The keys are
managed through :class:`KernelAuthKeys`.
"""

from __future__ import annotations

import errno
import socket
import struct

from ..._errors import AuthNotSupportedError
from .._linux import (
    _ASSOC_VALUE,
    _AUTHCHUNKS,
    _AUTHKEY,
    _AUTHKEYID,
    _HMACALGO,
    _SCTP_AUTH_ACTIVE_KEY,
    _SCTP_AUTH_CHUNK,
    _SCTP_AUTH_DEACTIVATE_KEY,
    _SCTP_AUTH_DELETE_KEY,
    _SCTP_AUTH_KEY,
    _SCTP_AUTH_SUPPORTED,
    _SCTP_HMAC_IDENT,
    _SCTP_PEER_AUTH_CHUNKS,
    IPPROTO_SCTP,
)

#: DATA and FORWARD TSN: what DTLS over SCTP (RFC 6083) needs authenticated (as the
#: core's default ``auth_chunks``; OpenSSL refuses a peer that does not ask for both).
_AUTH_CHUNKS = (0, 192)
#: HMAC-SHA-256 first, then the mandatory SHA-1 (RFC 4895 section 6.1).
_HMACS = (3, 1)
_SYSCTL = "/proc/sys/net/sctp/auth_enable"


def enable_auth(sock: socket.socket) -> None:
    """Turn SCTP-AUTH on for ``sock`` with DATA and FORWARD TSN authenticated (before
    connect/listen).

    Raises:
        OSError: this kernel cannot: no ``SCTP_AUTH_SUPPORTED`` and the sysctl is off.
    """
    try:
        sock.setsockopt(IPPROTO_SCTP, _SCTP_AUTH_SUPPORTED, _ASSOC_VALUE.pack(0, 1))
    except OSError as exc:
        if exc.errno not in (errno.ENOPROTOOPT, errno.EINVAL):
            raise
    try:
        for chunk_type in _AUTH_CHUNKS:
            sock.setsockopt(IPPROTO_SCTP, _SCTP_AUTH_CHUNK, bytes([chunk_type]))
    except OSError as exc:
        if exc.errno != errno.EACCES:
            raise
        raise OSError(
            exc.errno,
            "kernel SCTP-AUTH is off for this socket: this kernel has no per-socket "
            f"switch, so set the sysctl net.sctp.auth_enable=1 ({_SYSCTL}) before "
            "creating sockets",
        ) from exc
    hmacs = _HMACALGO.pack(len(_HMACS)) + struct.pack(f"={len(_HMACS)}H", *_HMACS)
    sock.setsockopt(IPPROTO_SCTP, _SCTP_HMAC_IDENT, hmacs)


def peer_supports_auth(sock: socket.socket) -> bool:
    """Whether the peer of ``sock``'s association announced SCTP-AUTH."""
    try:
        sock.getsockopt(IPPROTO_SCTP, _SCTP_PEER_AUTH_CHUNKS, _AUTHCHUNKS.size + 256)
    except OSError as exc:
        if exc.errno == errno.EACCES:  # "the peer is not AUTH capable"
            return False
        raise
    return True


def require_peer_auth(sock: socket.socket, where: str) -> None:
    """Raise :class:`AuthNotSupportedError` unless the peer announced SCTP-AUTH."""
    if not peer_supports_auth(sock):
        raise AuthNotSupportedError(
            errno.ECONNREFUSED,
            f"{where} does not offer SCTP-AUTH (RFC 4895), which auth=True requires",
        )


class KernelAuthKeys:
    """The endpoint-pair shared keys of a kernel association
    (:class:`~trio_sctls.transport.AuthKeys` by ``SCTP_AUTH_*`` socket options).

    The socket is one-to-one, so association id 0 names its association.
    """

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    def __repr__(self) -> str:
        return f"<KernelAuthKeys fd={self._sock.fileno()}>"

    @property
    def active_key_id(self) -> int:
        """The key our outgoing AUTH chunks use now (``SCTP_AUTH_ACTIVE_KEY``)."""
        raw = self._sock.getsockopt(IPPROTO_SCTP, _SCTP_AUTH_ACTIVE_KEY, _AUTHKEYID.size)
        return int(_AUTHKEYID.unpack(raw)[1])

    def add_key(self, key_id: int, secret: bytes) -> None:
        """Install ``secret`` as shared key ``key_id`` (``SCTP_AUTH_KEY``)."""
        _check_id(key_id)
        if key_id == self.active_key_id:
            raise ValueError(f"shared key {key_id} is active: it cannot be replaced")
        option = _AUTHKEY.pack(0, key_id, len(secret)) + bytes(secret)
        self._set(_SCTP_AUTH_KEY, option, f"add shared key {key_id}")

    def activate_key(self, key_id: int) -> None:
        """Sign what we send from now on with ``key_id`` (``SCTP_AUTH_ACTIVE_KEY``)."""
        self._key_op(_SCTP_AUTH_ACTIVE_KEY, key_id, "activate")

    def deactivate_key(self, key_id: int) -> None:
        """Stop sending with ``key_id`` (``SCTP_AUTH_DEACTIVATE_KEY``)."""
        self._key_op(_SCTP_AUTH_DEACTIVATE_KEY, key_id, "deactivate")

    def delete_key(self, key_id: int) -> None:
        """Forget ``key_id`` (``SCTP_AUTH_DELETE_KEY``)."""
        self._key_op(_SCTP_AUTH_DELETE_KEY, key_id, "delete")

    def _key_op(self, option: int, key_id: int, what: str) -> None:
        _check_id(key_id)
        self._set(option, _AUTHKEYID.pack(0, key_id), f"{what} shared key {key_id}")

    def _set(self, option: int, value: bytes, what: str) -> None:
        try:
            self._sock.setsockopt(IPPROTO_SCTP, option, value)
        except OSError as exc:
            if exc.errno == errno.EINVAL:
                # Unknown key, or the active one: the kernel's way of saying no.
                raise ValueError(f"cannot {what}: the kernel refused ({exc.strerror})") from exc
            raise


def _check_id(key_id: int) -> None:
    if not 0 <= key_id <= 65535:
        raise ValueError(f"shared key identifier {key_id} is not 0..65535")
