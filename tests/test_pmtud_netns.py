"""Path MTU discovery over real paths: our udp transport between two network
namespaces joined by a veth pair of MTU 1500 and 9000, one process at each end, over
IPv4 and IPv6, and through a router whose narrower link it learns of by ICMP or ICMPv6.

Needs root (CI runs as root) and iproute2; without them the test fails and says why,
rather than passing without having looked at a real path.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from benchmarks import _netns

ROOT = Path(__file__).resolve().parent.parent
#: Seconds either end may take: set-up, the search, 1 MiB each way, shutdown.
TIMEOUT = 60.0


def _peer(namespace: str, role: str, address: str) -> list[str]:
    return _netns.command_in(namespace, [sys.executable, "-m", "tests._pmtud_peer", role, address])


def _require_namespaces() -> None:
    why = _netns.unavailable()
    if why is not None:
        pytest.fail(f"this test needs network namespaces (CI runs as root): {why}")


#: The routed path's addresses: client -- router (a /30 each side) -- server.
CLIENT, ROUTER_NEAR, ROUTER_FAR, SERVER = "10.212.0.1", "10.212.0.2", "10.212.0.5", "10.212.0.6"
#: The same path's IPv6 addresses (unique local, a /64 each side).
CLIENT6, ROUTER_NEAR6, ROUTER_FAR6, SERVER6 = (
    "fd12:212::1",
    "fd12:212::2",
    "fd12:213::1",
    "fd12:213::2",
)
#: A veth pair's IPv6 addresses, added next to its IPv4 ones.
VETH6_A, VETH6_B = "fd12:211::1", "fd12:211::2"


@pytest.mark.parametrize("version", [4, 6], ids=["ipv4", "ipv6"])
@pytest.mark.parametrize("mtu", [1500, 9000])
def test_the_udp_transport_settles_on_the_veth_mtu_and_data_flows(mtu: int, version: int) -> None:
    # IP and UDP headers take 28 bytes (IPv4) or 48 (IPv6) of each frame; the SCTP
    # packet is whole 4-byte words, which fill both MTUs exactly.
    _require_namespaces()
    with _netns.veth_pair(mtu=mtu) as (ns_a, ns_b, addr_a, _addr_b):
        if version == 6:
            for ns, address in ((ns_a, VETH6_A), (ns_b, VETH6_B)):
                # nodad: usable at once, without duplicate address detection's delay.
                _ip("-n", ns, "addr", "add", f"{address}/64", "dev", _netns.INTERFACE, "nodad")
            addr_a = VETH6_A
        reports = _run_pair(ns_a, ns_b, addr_a)
    for report in reports:
        assert report["state"] == "SEARCH_COMPLETE"
        assert report["path_mtu"] == mtu
        assert report["bytes"] == 64 * 16 * 1024


def _ip(*argv: str) -> None:
    subprocess.run(["ip", *argv], check=True, capture_output=True, timeout=10)


SIX = {CLIENT: CLIENT6, ROUTER_NEAR: ROUTER_NEAR6, ROUTER_FAR: ROUTER_FAR6, SERVER: SERVER6}


@contextmanager
def _routed_path(near_mtu: int, far_mtu: int) -> Iterator[tuple[str, str, str]]:
    """Three namespaces, client -- router -- server, with links of ``near_mtu`` and
    ``far_mtu``: the client's interface says ``near_mtu``, the path carries less. The
    router answers too-big packets with ICMP Fragmentation Needed, as routers do.
    Every link has IPv4 and IPv6 addresses. Yields the three namespace names; always
    removes them."""
    tag = f"sctls-pmtud-{os.getpid()}-{secrets.token_hex(3)}"
    client, router, server = f"{tag}-c", f"{tag}-r", f"{tag}-s"
    made: list[str] = []
    try:
        for ns in (client, router, server):
            _ip("netns", "add", ns)
            made.append(ns)
        for (ns, dev), (peer_ns, peer_dev) in (
            ((client, "veth0"), (router, "near")),
            ((router, "far"), (server, "veth0")),
        ):
            _ip("link", "add", dev, "netns", ns, "type", "veth", "peer", "name", peer_dev,
                "netns", peer_ns)  # fmt: skip
        for ns, dev, address, mtu in (
            (client, "veth0", CLIENT, near_mtu),
            (router, "near", ROUTER_NEAR, near_mtu),
            (router, "far", ROUTER_FAR, far_mtu),
            (server, "veth0", SERVER, far_mtu),
        ):
            _ip("-n", ns, "addr", "add", f"{address}/30", "dev", dev)
            _ip("-n", ns, "addr", "add", f"{SIX[address]}/64", "dev", dev, "nodad")
            _ip("-n", ns, "link", "set", dev, "mtu", str(mtu), "up")
        for ns in made:
            _ip("-n", ns, "link", "set", "lo", "up")
        _ip("-n", client, "route", "add", "default", "via", ROUTER_NEAR)
        _ip("-n", server, "route", "add", "default", "via", ROUTER_FAR)
        _ip("-n", client, "-6", "route", "add", "default", "via", ROUTER_NEAR6)
        _ip("-n", server, "-6", "route", "add", "default", "via", ROUTER_FAR6)
        for forwarding in ("net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"):
            _netns.run_in(router, ["sysctl", "-qw", forwarding], timeout=10)
        yield client, router, server
    finally:
        for ns in made:
            subprocess.run(["ip", "netns", "delete", ns], check=False, capture_output=True)


def _run_pair(
    server_ns: str, client_ns: str, address: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run the peer script's server in ``server_ns`` at ``address`` and its client in
    ``client_ns``; return their reports, the client's first."""
    server = subprocess.Popen(
        _peer(server_ns, "server", address), cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None
        assert server.stdout.readline() == "ready\n"
        client = subprocess.run(
            _peer(client_ns, "client", address),
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )
        assert client.returncode == 0, client.stderr
        served, _ = server.communicate(timeout=TIMEOUT)
        assert server.returncode == 0
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    return json.loads(client.stdout), json.loads(served)


def _icmp_unreachables_sent(namespace: str) -> int:
    """ICMP Destination Unreachable messages (Fragmentation Needed among them) that
    ``namespace`` has sent, from its /proc/net/snmp."""
    snmp = _netns.run_in(namespace, ["cat", "/proc/net/snmp"], timeout=10).stdout
    names, values = (line.split() for line in snmp.splitlines() if line.startswith("Icmp:"))
    return int(values[names.index("OutDestUnreachs")])


def _icmp6_packet_too_big_sent(namespace: str) -> int:
    """ICMPv6 Packet Too Big messages ``namespace`` has sent, from /proc/net/snmp6."""
    snmp6 = _netns.run_in(namespace, ["cat", "/proc/net/snmp6"], timeout=10).stdout
    counters = dict(line.split() for line in snmp6.splitlines() if line.strip())
    return int(counters["Icmp6OutPktTooBigs"])


@pytest.mark.parametrize(
    ("server_address", "too_big_sent"),
    [(SERVER, _icmp_unreachables_sent), (SERVER6, _icmp6_packet_too_big_sent)],
    ids=["ipv4", "ipv6"],
)
def test_a_router_s_packet_too_big_is_probed_next(
    server_address: str, too_big_sent: Callable[[str], int]
) -> None:
    # The client's interface says 9000; a router further on forwards only 1450 (no
    # common plateau). Its ICMP Fragmentation Needed (ICMPv6 Packet Too Big: IPv6
    # routers never fragment) ends the 9000-byte probe at once and names 1450, which
    # is probed next (1448: whole 4-byte words of SCTP packet; probes alone would stop
    # at the 1400 plateau). The server's own interface is the narrow one.
    _require_namespaces()
    with _routed_path(9000, 1450) as (client_ns, router_ns, server_ns):
        client, server = _run_pair(server_ns, client_ns, server_address)
        assert too_big_sent(router_ns) > 0
    assert (client["path_mtu"], server["path_mtu"]) == (1448, 1448)
    for report in (client, server):
        assert report["state"] == "SEARCH_COMPLETE"
        assert report["bytes"] == 64 * 16 * 1024


def test_a_silent_narrower_link_is_found_by_probes_alone() -> None:
    # A veth pair whose far end takes only 1450-byte frames: larger ones vanish, and
    # nobody says so (a black hole). The 9000-byte probes time out, and the search
    # settles on the largest common plateau that fits, 1400; data flows meanwhile.
    _require_namespaces()
    with _netns.veth_pair(mtu=9000) as (ns_a, ns_b, addr_a, _addr_b):
        subprocess.run(
            ["ip", "-n", ns_a, "link", "set", _netns.INTERFACE, "mtu", "1450"],
            check=True,
            timeout=10,
        )
        client, server = _run_pair(ns_a, ns_b, addr_a)
    assert (client["path_mtu"], server["path_mtu"]) == (1400, 1448)
    for report in (client, server):
        assert report["state"] == "SEARCH_COMPLETE"
        assert report["bytes"] == 64 * 16 * 1024
