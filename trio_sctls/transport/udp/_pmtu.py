"""The socket side of path MTU discovery (RFC 8899 in the core, ``sctp._pmtud``).

The core finds the path MTU with probes; the socket must let it. Linux by default
(``IP_PMTUDISC_WANT``) sets DF but also caps datagrams at the path MTU it learned from
ICMP and fragments some locally, which would let a probe "succeed" as fragments or
fail for reasons of its own. ``IP_PMTUDISC_PROBE`` (and ``IPV6_PMTUDISC_PROBE``) sets
DF on everything and ignores the learned path MTU: a probe crosses the path whole or
not at all, and a datagram above the interface's MTU fails at once with ``EMSGSIZE``,
which the core takes as a failed probe. The few datagrams the core marks
:class:`~trio_sctls.sctp.Fragmentable` (DATA cut before the path shrank, never cut
again) go out with fragmentation allowed for that one send.

The interface's MTU towards a peer (``IP_MTU`` of a socket connected to it) caps the
search, so on loopback, veth or jumbo Ethernet the first probe above the base size is
the right one. Python 3.11's socket module names none of these options on every
platform, so they are spelled out here (Linux values); elsewhere all of this is skipped
and the probes alone decide.
"""

from __future__ import annotations

import socket
import sys
from collections.abc import Hashable
from typing import Final

from ...sctp import Endpoint

_SOL_IP: Final = 0
_SOL_IPV6: Final = 41
IP_MTU_DISCOVER: Final = 10
IP_MTU: Final = 14
IPV6_MTU_DISCOVER: Final = 23
IPV6_MTU: Final = 24
#: Never set DF: the kernel may fragment (what a Fragmentable datagram needs).
IP_PMTUDISC_DONT: Final = 0
#: Set DF, ignore the learned path MTU: what probes need (same value for IPv6).
IP_PMTUDISC_PROBE: Final = 3

_LINUX = sys.platform.startswith("linux")


def _levels(family: int) -> tuple[tuple[int, int], ...]:
    """(level, option) of the MTU discovery mode that governs ``family``'s sends (an
    IPv6 socket may send IPv4 too, to mapped addresses)."""
    if family == socket.AF_INET6:
        return ((_SOL_IPV6, IPV6_MTU_DISCOVER), (_SOL_IP, IP_MTU_DISCOVER))
    return ((_SOL_IP, IP_MTU_DISCOVER),)


def _set_mode(sock: socket.socket, mode: int) -> bool:
    done = False
    for level, option in _levels(sock.family):
        try:
            sock.setsockopt(level, option, mode)
            done = True
        except OSError:
            continue
    return done


def enable_probing(sock: socket.socket) -> bool:
    """Set DF on everything ``sock`` sends and stop the kernel from capping or
    fragmenting it (``IP_PMTUDISC_PROBE``); ``False`` where that is not available."""
    return _LINUX and _set_mode(sock, IP_PMTUDISC_PROBE)


def send_fragmentable(sock: socket.socket, data: bytes, address: tuple[object, ...]) -> None:
    """Send ``data`` with IP fragmentation allowed, then restore probing mode.

    Raises:
        OSError: as ``sendto`` does.
    """
    if not _LINUX:
        sock.sendto(data, address)
        return
    _set_mode(sock, IP_PMTUDISC_DONT)
    try:
        sock.sendto(data, address)
    finally:
        _set_mode(sock, IP_PMTUDISC_PROBE)


def interface_mtu(family: int, address: object) -> int | None:
    """The MTU of the route to ``address`` (the outgoing interface's, or a smaller one
    the kernel learned), from a throwaway socket connected there; ``None`` if unknown.
    Connecting a UDP socket sends nothing."""
    if not _LINUX:
        return None
    level, option = (_SOL_IPV6, IPV6_MTU) if family == socket.AF_INET6 else (_SOL_IP, IP_MTU)
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.connect(address)  # type: ignore[arg-type]
            mtu = probe.getsockopt(level, option)
    except OSError:
        return None
    return int(mtu) if mtu > 0 else None


def tell_core(
    endpoints: dict[int, Endpoint], packet: bytes, address: Hashable, mtu: int | None, now: float
) -> Endpoint | None:
    """Hand the core news about ``packet``, one we sent to ``address``: an ICMP Packet
    Too Big quoting it (next-hop ``mtu``), or, with ``mtu`` None, our own ``EMSGSIZE``
    for it. Returns the endpoint whose association took it (``None``: not ours)."""
    if len(packet) < 4 or not address:
        return None
    endpoint = endpoints.get(int.from_bytes(packet[0:2], "big"))
    if endpoint is None:
        return None
    if mtu is None:
        taken = endpoint.datagram_refused(packet, address, now)
    else:
        taken = endpoint.packet_too_big(packet, address, mtu, now)
    return endpoint if taken is not None else None
