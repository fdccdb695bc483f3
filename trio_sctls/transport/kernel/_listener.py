"""Opening kernel SCTP associations: :func:`connect_kernel`, :func:`listen_kernel` and
:class:`KernelListener`, and the registry's factories :func:`open_client` /
:func:`open_server`.

**Addresses.** Several peer addresses are given to ``sctp_connectx`` and several local
ones to ``sctp_bindx`` (both are ``setsockopt`` calls taking packed ``sockaddr``
structures); mixing IPv4 and IPv6 uses an IPv6 socket. IPv4-mapped IPv6 addresses are
reported as plain IPv4. Address lists are read with ``getsockopt(SCTP_GET_PEER_ADDRS /
SCTP_GET_LOCAL_ADDRS)`` through ``ctypes``, because those calls read the association id
from the caller's buffer, which ``socket.getsockopt`` leaves uninitialised.

**Buffers.** Linux gives SCTP sockets fixed buffers (``net.core.wmem_default`` /
``rmem_default``, 212,992 bytes) where TCP's grow with the connection. Every socket asks
for 1 MiB send and receive buffers before connecting or listening (accepted sockets
inherit them), which Linux caps at twice ``net.core.wmem_max`` / ``rmem_max``: with the
default receive buffer, a busy receiver discards DATA chunks now and then, and a discard
that fast retransmit does not repair costs a retransmission timeout of at least a second
(measured: ``docs/transports.md``).
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import struct
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, final

import trio

from ..._errors import (
    AuthNotSupportedError,
    SCTPNotSupportedError,
)
from .._base import (
    DEFAULT_MAX_MESSAGE_SIZE,
    MessageListener,
    aborted_on_exit,
    closed_on_exit,
)
from .._linux import (
    _IGNORED_ACCEPT_ERRORS,
    _SCTP_GET_LOCAL_ADDRS,
    _SCTP_SOCKOPT_BINDX_ADD,
    _SCTP_SOCKOPT_CONNECTX,
    IPPROTO_SCTP,
    _association_addresses,
    _check_max_message_size,
    _check_port,
    _check_stream_counts,
    _configure,
    _configure_io,
    _hosts_list,
    _pack_sockaddr,
    _resolve,
    _sctp_socket,
)
from .._setup import Timers, stream_arguments, timers_of
from ._auth import KernelAuthKeys, enable_auth, peer_supports_auth, require_peer_auth
from ._transport import KernelTransport

if TYPE_CHECKING:
    from ..._options import TransportOptions

#: Socket buffer size asked for (SO_SNDBUF and SO_RCVBUF); Linux caps it at twice
#: net.core.wmem_max / rmem_max (425,984 bytes with default sysctls). See "Buffers" in
#: the module docstring.
SOCKET_BUFFER_SIZE = 1024 * 1024


def _enlarge_buffers(sock: socket.socket) -> None:
    """Ask for :data:`SOCKET_BUFFER_SIZE` send and receive buffers, before connect or
    listen (the association's receive window is sized from the receive buffer then, and
    accepted sockets inherit both). Only ever grows them: a system whose defaults are
    larger keeps them."""
    for option in (socket.SO_SNDBUF, socket.SO_RCVBUF):
        # getsockopt reports the doubled value the kernel keeps; setsockopt doubles.
        if sock.getsockopt(socket.SOL_SOCKET, option) < SOCKET_BUFFER_SIZE:
            sock.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER_SIZE)


# --- Connecting and listening ----------------------------------------------------------


async def _connect_socket(sock: socket.socket, packed: bytes, where: str) -> None:
    """sctp_connectx, waiting for the association to come up; ``where`` (the port and
    host) goes in the error messages."""
    try:
        sock.setsockopt(IPPROTO_SCTP, _SCTP_SOCKOPT_CONNECTX, packed)
    except BlockingIOError:
        pass  # EINPROGRESS
    else:
        await trio.lowlevel.checkpoint()
    # A connecting one-to-one socket polls writable once ESTABLISHED, or reports an error.
    await trio.lowlevel.wait_writable(sock)
    code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    if code == errno.ECONNREFUSED:
        # The peer answered INIT with ABORT: nothing listens on that port there.
        raise ConnectionRefusedError(code, f"nothing listens on {where}")
    if code == errno.ETIMEDOUT:
        raise TimeoutError(
            code,
            f"no answer from {where} after Max.Init.Retransmits retransmissions of INIT "
            "(TransportOptions max_init_retransmissions and rto_initial bound how long "
            "connecting takes; or wrap it in trio.fail_after)",
        )
    if code:
        raise OSError(code, f"SCTP connect to {where} failed: {os.strerror(code)}")
    try:
        sock.getpeername()
    except OSError as exc:
        raise OSError(exc.errno, "the SCTP association could not be established") from exc


async def connect_kernel(
    hosts: str | Sequence[str],
    port: int,
    *,
    outbound_streams: int = 10,
    max_inbound_streams: int = 10,
    local_addresses: Sequence[str] | None = None,
    local_port: int = 0,
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    timers: Timers | None = None,
    auth: bool = False,
) -> KernelTransport:
    """Establish an SCTP association with kernel SCTP and return it.

    Args:
        hosts: the peer's address or name, or several addresses of one multihomed peer
            (all are given to ``sctp_connectx``; each name contributes its first
            address). A single name that resolves to several addresses is tried
            address by address until one answers.
        port: the peer's SCTP port.
        outbound_streams: streams we ask to send on (SCTP_INITMSG).
        max_inbound_streams: most streams we accept from the peer.
        local_addresses: addresses to bind (several: multihoming with ``sctp_bindx``).
        local_port: local port (0: the kernel picks one).
        max_message_size: largest inbound message accepted (at least 18,437 bytes).
        timers: heartbeat and retransmission knobs (``SCTP_RTOINFO``,
            ``SCTP_ASSOCINFO``, ``SCTP_PEER_ADDR_PARAMS``, ``SCTP_INITMSG``); what it
            leaves ``None`` comes from the ``net.sctp`` sysctls.
        auth: require SCTP-AUTH (RFC 4895) with DATA authenticated; the keys are the
            transport's ``auth``.

    Returns:
        The established transport; its stream counts are the negotiated ones.

    Raises:
        SCTPNotSupportedError: this kernel has no SCTP.
        AuthNotSupportedError: ``auth`` and the peer does not offer SCTP-AUTH.
        OSError: the peer could not be reached or refused the association.
        ValueError: bad stream counts, port or message size.
    """
    _check_stream_counts(outbound_streams, max_inbound_streams)
    _check_max_message_size(max_message_size)
    _check_port(port)
    _check_port(local_port)
    names = _hosts_list(hosts, "hosts")
    resolved = [await _resolve(name, port) for name in names]
    local: list[tuple[int, str, int]] = []
    for name in local_addresses or ():
        local.append((await _resolve(name, local_port, passive=True))[0])
    if len(resolved) == 1:
        attempts = [[address] for address in resolved[0]]
    else:
        attempts = [[addresses[0] for addresses in resolved]]
    last_error: OSError | None = None
    for peers in attempts:
        try:
            sock = await _open_connected(
                peers, port, local, local_port, outbound_streams, max_inbound_streams, timers, auth
            )
        except (SCTPNotSupportedError, AuthNotSupportedError):
            raise
        except OSError as exc:
            last_error = exc
            continue
        return _with_auth(KernelTransport(sock, max_message_size=max_message_size), auth)
    assert last_error is not None
    if len(attempts) == 1:
        raise last_error
    raise OSError(
        last_error.errno,
        f"all {len(attempts)} addresses of {names[0]!r} failed; last: {last_error}",
    ) from last_error


def _with_auth(transport: KernelTransport, auth: bool) -> KernelTransport:
    """Give ``transport`` its SCTP-AUTH keys when the association requires them."""
    if auth:
        transport._auth_keys = KernelAuthKeys(transport._sock)
    return transport


async def _open_connected(
    peers: list[tuple[int, str, int]],
    port: int,
    local: list[tuple[int, str, int]],
    local_port: int,
    outbound_streams: int,
    max_inbound_streams: int,
    timers: Timers | None,
    auth: bool = False,
) -> socket.socket:
    families = {family for family, _address, _scope in peers + local}
    family = socket.AF_INET6 if socket.AF_INET6 in families else socket.AF_INET
    sock = _sctp_socket(family)
    try:
        if family == socket.AF_INET6 and socket.AF_INET in families:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        _configure(sock, outbound_streams, max_inbound_streams, timers)
        if auth:
            enable_auth(sock)
        _enlarge_buffers(sock)
        if local:
            packed_local = b"".join(
                _pack_sockaddr(fam, address, local_port, scope) for fam, address, scope in local
            )
            sock.setsockopt(IPPROTO_SCTP, _SCTP_SOCKOPT_BINDX_ADD, packed_local)
        elif local_port:
            sock.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", local_port))
        where = f"SCTP port {port} at {', '.join(address for _fam, address, _scope in peers)}"
        await _connect_socket(
            sock,
            b"".join(_pack_sockaddr(fam, address, port, scope) for fam, address, scope in peers),
            where,
        )
        if auth:
            require_peer_auth(sock, where)
    except BaseException:
        with contextlib.suppress(OSError):  # abort a half-open association, if any
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        trio.lowlevel.notify_closing(sock)
        sock.close()
        raise
    return sock


@final
class KernelListener(MessageListener):
    """A listening one-to-one kernel SCTP socket; :meth:`accept` returns established
    :class:`KernelTransport` objects. Create it with :func:`listen_kernel`."""

    kind = "kernel"

    def __init__(self, sock: socket.socket, *, max_message_size: int, auth: bool = False) -> None:
        """Wrap a bound, configured, listening socket (internal: use
        :func:`listen_kernel`)."""
        self._sock = sock
        self._auth = auth
        self._port = int(sock.getsockname()[1])
        self._max_message_size = max_message_size

    def __repr__(self) -> str:
        return f"<KernelListener port={self.port}{' closed' if self._closed else ''}>"

    @property
    def port(self) -> int:
        """The SCTP port this listener is bound to."""
        return self._port

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """The local addresses this listener is bound to (several when multihomed)."""
        if self._closed:
            return []
        try:
            return _association_addresses(self._sock, _SCTP_GET_LOCAL_ADDRS, 0)
        except OSError:
            return []

    if TYPE_CHECKING:

        async def accept(self) -> KernelTransport:
            """The next association (see :meth:`MessageListener.accept`)."""

    async def _accept(self) -> KernelTransport:
        await trio.lowlevel.checkpoint_if_cancelled()
        waited = False
        while True:
            if self._closed:
                raise trio.ClosedResourceError("this listener was closed")
            try:
                sock, _address = self._sock.accept()
            except BlockingIOError:
                await trio.lowlevel.wait_readable(self._sock)
                waited = True
                continue
            except OSError as exc:
                if exc.errno in _IGNORED_ACCEPT_ERRORS:
                    continue
                raise
            try:
                sock.setblocking(False)
                _configure_io(sock)
                if self._auth and not peer_supports_auth(sock):
                    # Linux accepts peers without SCTP-AUTH; we require it: abort.
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    sock.close()
                    continue
                transport = KernelTransport(sock, max_message_size=self._max_message_size)
            except OSError:
                sock.close()  # the association died before we got to it
                continue
            _with_auth(transport, self._auth)
            if not waited:
                await trio.lowlevel.cancel_shielded_checkpoint()
            return transport

    def _close(self) -> None:
        # The kernel aborts the associations not yet accepted.
        trio.lowlevel.notify_closing(self._sock)
        self._sock.close()


async def listen_kernel(
    port: int,
    *,
    hosts: str | Sequence[str] | None = None,
    outbound_streams: int = 10,
    max_inbound_streams: int = 10,
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    backlog: int = 128,
    timers: Timers | None = None,
    auth: bool = False,
) -> KernelListener:
    """Listen for SCTP associations with kernel SCTP.

    Args:
        port: the port to bind (0: the kernel picks one; see :attr:`KernelListener.port`).
        hosts: local address(es) to bind, several for multihoming (``sctp_bindx``); each
            name contributes its first address. ``None``: every address, IPv6 and IPv4.
        outbound_streams: streams we offer to send on (capped by each peer's maximum).
        max_inbound_streams: most streams we accept from a peer.
        max_message_size: largest inbound message accepted (at least 18,437 bytes).
        backlog: the ``listen()`` backlog.
        timers: heartbeat and retransmission knobs, as for :func:`connect_kernel`;
            accepted associations inherit them.
        auth: require SCTP-AUTH (RFC 4895) of every peer: one without it is aborted
            as it is accepted (Linux itself would take it).

    Raises:
        SCTPNotSupportedError: this kernel has no SCTP.
        OSError: the address could not be bound.
        ValueError: bad stream counts, port or message size.
    """
    _check_stream_counts(outbound_streams, max_inbound_streams)
    _check_max_message_size(max_message_size)
    _check_port(port)
    if hosts is None:
        try:
            sock = _sctp_socket(socket.AF_INET6)
        except SCTPNotSupportedError:
            raise
        except OSError as exc:
            if exc.errno != errno.EAFNOSUPPORT:
                raise
            sock = _sctp_socket(socket.AF_INET)
        try:
            if sock.family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
                sock.bind(("::", port))
            else:
                sock.bind(("0.0.0.0", port))
        except BaseException:
            sock.close()
            raise
    else:
        local = [
            (await _resolve(name, port, passive=True))[0] for name in _hosts_list(hosts, "hosts")
        ]
        families = {family for family, _address, _scope in local}
        family = socket.AF_INET6 if socket.AF_INET6 in families else socket.AF_INET
        sock = _sctp_socket(family)
        try:
            if family == socket.AF_INET6 and socket.AF_INET in families:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            packed = b"".join(
                _pack_sockaddr(fam, address, port, scope) for fam, address, scope in local
            )
            sock.setsockopt(IPPROTO_SCTP, _SCTP_SOCKOPT_BINDX_ADD, packed)
        except BaseException:
            sock.close()
            raise
    try:
        _configure(sock, outbound_streams, max_inbound_streams, timers)
        if auth:
            enable_auth(sock)
        _enlarge_buffers(sock)
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    await trio.lowlevel.checkpoint()
    return KernelListener(sock, max_message_size=max_message_size, auth=auth)


def open_client(
    hosts: tuple[str, ...] | None, port: int, options: TransportOptions
) -> AbstractAsyncContextManager[KernelTransport]:
    """:func:`connect_kernel` from :class:`~trio_sctls.TransportOptions`: yields the
    association; whatever is still open on exit is aborted. ``hosts`` defaults to
    127.0.0.1."""
    connecting = connect_kernel(
        hosts or "127.0.0.1",
        port,
        local_addresses=options.local_addresses,
        timers=timers_of(options),
        auth=options.auth,
        **stream_arguments(options),
    )
    return aborted_on_exit(connecting)


def open_server(
    port: int, hosts: tuple[str, ...] | None, options: TransportOptions
) -> AbstractAsyncContextManager[KernelListener]:
    """:func:`listen_kernel` from :class:`~trio_sctls.TransportOptions`: yields the
    listener; it is closed on exit (accepted associations are sockets of their own and
    live on)."""
    listening = listen_kernel(
        port,
        hosts=hosts,
        timers=timers_of(options),
        auth=options.auth,
        **stream_arguments(options),
    )
    return closed_on_exit(listening)
