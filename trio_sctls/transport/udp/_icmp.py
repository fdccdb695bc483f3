"""ICMP errors on a UDP socket (Linux ``IP_RECVERR``): asking for them, and reading
what kind of error one is. What they mean for an association is decided in the core
(``Endpoint.peer_unreachable``); see "Dead peers" in :mod:`._socket`."""

from __future__ import annotations

import errno
import socket
import struct
import sys
from typing import Final

# ICMP errors (Linux): with IP_RECVERR / IPV6_RECVERR a UDP socket queues each ICMP
# error about a datagram it sent, whether or not it is connected, with the quoted
# datagram (our SCTP packet) and its original destination; recvmsg(MSG_ERRQUEUE)
# reads them. Python 3.11's socket module names none of these.
_SOL_IP: Final = 0
_SOL_IPV6: Final = 41
_IP_RECVERR: Final = 11
_IPV6_RECVERR: Final = 25
MSG_ERRQUEUE: Final = 0x2000
#: struct sock_extended_err: errno, origin, ICMP type, ICMP code, pad, info, data.
_EXTENDED_ERR = struct.Struct("=IBBBBII")
_ORIGIN_ICMP: Final = 2
_ORIGIN_ICMP6: Final = 3
#: (origin, type, code) of a port unreachable: ICMP destination unreachable / port
#: unreachable (3, 3) and ICMPv6 destination unreachable / port unreachable (1, 4).
_PORT_UNREACHABLE: Final = frozenset({(_ORIGIN_ICMP, 3, 3), (_ORIGIN_ICMP6, 1, 4)})
#: ICMP destination unreachable / fragmentation needed and DF set (3, 4); ICMPv6 Packet
#: Too Big is type 2 with any code.
_TOO_BIG: Final = frozenset({(_ORIGIN_ICMP, 3, 4)})
#: Errors a socket reports for ICMP messages (RFC 1122 soft and hard errors): part of
#: running on a network, logged at DEBUG; other socket errors at WARNING.
ICMP_ERRNOS: Final = frozenset(
    {
        errno.ECONNREFUSED,
        errno.EHOSTUNREACH,
        errno.ENETUNREACH,
        errno.EHOSTDOWN,
        errno.ENETDOWN,
        errno.EMSGSIZE,
        errno.EPROTO,
        errno.EACCES,
        errno.EPERM,
    }
)
#: Room for the extended error and the offender's address (a sockaddr_in6).
ERROR_ANCILLARY: Final = socket.CMSG_SPACE(_EXTENDED_ERR.size + 28)
#: Bytes of the quoted datagram read: the common header and an INIT's Initiate Tag.
QUOTED_SIZE: Final = 64


def enable_icmp_errors(sock: socket.socket, family: int) -> bool:
    """Queue ICMP errors on ``sock`` (IPv4 ones too on a dual-stack IPv6 socket);
    ``False`` where the system cannot (not Linux)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        sock.setsockopt(_SOL_IP, _IP_RECVERR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(_SOL_IPV6, _IPV6_RECVERR, 1)
    except OSError:  # pragma: no cover - every Linux has them
        return False
    return True


def _extended_error(ancillary: list[tuple[int, int, bytes]]) -> tuple[int, int, int, int] | None:
    """``(origin, ICMP type, ICMP code, info)`` of the error an error-queue ``recvmsg``
    reports in its control messages, or ``None``."""
    for level, kind, data in ancillary:
        if (level, kind) in ((_SOL_IP, _IP_RECVERR), (_SOL_IPV6, _IPV6_RECVERR)) and len(
            data
        ) >= _EXTENDED_ERR.size:
            _errno, origin, icmp_type, code, _pad, info, _data = _EXTENDED_ERR.unpack_from(data)
            return origin, icmp_type, code, info
    return None


def port_unreachable(ancillary: list[tuple[int, int, bytes]]) -> bool:
    """Whether the control messages of an error-queue ``recvmsg`` report an ICMP or
    ICMPv6 port unreachable."""
    error = _extended_error(ancillary)
    return error is not None and error[:3] in _PORT_UNREACHABLE


def packet_too_big(ancillary: list[tuple[int, int, bytes]]) -> int | None:
    """The next-hop MTU an ICMP Fragmentation Needed (type 3, code 4) or ICMPv6 Packet
    Too Big (type 2) reports, from the control messages of an error-queue ``recvmsg``;
    ``None`` for any other error (path MTU discovery takes it as a hint, RFC 8899
    Section 4.6)."""
    error = _extended_error(ancillary)
    if error is None:
        return None
    origin, icmp_type, code, mtu = error
    if (origin, icmp_type, code) in _TOO_BIG or (origin, icmp_type) == (_ORIGIN_ICMP6, 2):
        return mtu
    return None
