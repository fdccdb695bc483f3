"""pyOpenSSL contexts for DTLS over SCTP, and the peer identity checks OpenSSL leaves out.

RFC 6083 (with RFC 8996) allows DTLS 1.2 only here: DTLS 1.0 is deprecated, and DTLS
1.3 has no renegotiation and its own key schedule, which RFC 6083's SCTP-AUTH key
switch does not describe (OpenSSL, too, limits DTLS over SCTP to 1.2). So every context
is pinned to DTLS 1.2, whether we build it or the user does.

pyOpenSSL verifies the certificate chain but not the name in it: that is
``service_identity``'s job (:func:`verify_peer_identity`), done after every handshake.
"""

from __future__ import annotations

import ipaddress
import os
import weakref
from typing import Any

from OpenSSL import SSL
from service_identity import VerificationError
from service_identity.cryptography import (
    verify_certificate_hostname,
    verify_certificate_ip_address,
)

#: The protocol version number of DTLS 1.2 on the wire (RFC 6347 section 4.1).
DTLS_1_2 = 0xFEFD

StrPath = str | os.PathLike[str]


def create_dtls_context(
    *,
    server_side: bool = False,
    certfile: StrPath | None = None,
    keyfile: StrPath | None = None,
    cafile: StrPath | None = None,
    require_peer_certificate: bool | None = None,
) -> SSL.Context:
    """A pyOpenSSL DTLS 1.2 context from PEM files, for DTLS over SCTP.

    Args:
        server_side: a server context (it needs ``certfile``).
        certfile: our certificate chain (PEM).
        keyfile: its private key (PEM); default: in ``certfile``.
        cafile: the CA certificates that verify the peer; default (client): the
            system's trust store.
        require_peer_certificate: verify the peer's certificate and fail without one.
            Default: yes for clients, and for servers given a ``cafile`` (mutual TLS).

    Raises:
        OpenSSL.SSL.Error: a file could not be loaded, or the key does not match.
    """
    context = SSL.Context(SSL.DTLS_METHOD)
    if certfile is not None:
        context.use_certificate_chain_file(os.fspath(certfile))
        context.use_privatekey_file(os.fspath(keyfile if keyfile is not None else certfile))
        context.check_privatekey()
    if cafile is not None:
        context.load_verify_locations(os.fspath(cafile))
    elif not server_side:
        context.set_default_verify_paths()
    if require_peer_certificate is None:
        require_peer_certificate = not server_side or cafile is not None
    if require_peer_certificate:
        context.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT)
    return context


#: Contexts already pinned (pyOpenSSL forbids changing a context once it made a
#: connection, so each is prepared once, before its first one).
_prepared: weakref.WeakSet[SSL.Context] = weakref.WeakSet()


def prepare_context(context: SSL.Context) -> None:
    """Pin ``context`` to DTLS 1.2 and turn off what SCTP makes wrong: OpenSSL must
    not probe a path MTU (SCTP fragments user messages; we set the record size).
    Idempotent.

    Raises:
        ValueError: the context already made connections elsewhere (pyOpenSSL
            forbids changing it now): give DTLS over SCTP a context of its own.
    """
    if context in _prepared:
        return
    context.set_min_proto_version(DTLS_1_2)
    context.set_max_proto_version(DTLS_1_2)
    context.set_options(SSL.OP_NO_QUERY_MTU)
    _prepared.add(context)


def verify_peer_identity(certificate: Any, server_hostname: str) -> None:
    """Check that ``certificate`` (a :mod:`cryptography` certificate) names
    ``server_hostname``, a DNS name or an IP address (RFC 6125 rules, through
    ``service_identity``).

    Raises:
        service_identity.VerificationError: it does not.
    """
    try:
        address = ipaddress.ip_address(server_hostname)
    except ValueError:
        verify_certificate_hostname(certificate, server_hostname)
    else:
        verify_certificate_ip_address(certificate, str(address))


def is_ip_address(name: str) -> bool:
    """Whether ``name`` is an IP address (no SNI is sent for those, RFC 6066 section 3)."""
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


__all__ = [
    "DTLS_1_2",
    "VerificationError",
    "create_dtls_context",
    "is_ip_address",
    "prepare_context",
    "verify_peer_identity",
]
