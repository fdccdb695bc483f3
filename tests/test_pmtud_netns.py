"""Path MTU discovery over real paths: our udp transport between two network
namespaces joined by a veth pair of MTU 1500 and 9000, one process at each end.

Needs root (CI runs as root) and iproute2; without them the test fails and says why,
rather than passing without having looked at a real path.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import _netns

ROOT = Path(__file__).resolve().parent.parent
#: Seconds either end may take: set-up, the search, 1 MiB each way, shutdown.
TIMEOUT = 60.0
#: IPv4 + UDP headers under each SCTP packet.
OVERHEAD = 28


def _peer(namespace: str, role: str, address: str) -> list[str]:
    return _netns.command_in(namespace, [sys.executable, "-m", "tests._pmtud_peer", role, address])


@pytest.mark.parametrize("mtu", [1500, 9000])
def test_the_udp_transport_settles_on_the_veth_mtu_and_data_flows(mtu: int) -> None:
    why = _netns.unavailable()
    if why is not None:
        pytest.fail(f"this test needs network namespaces (CI runs as root): {why}")
    with _netns.veth_pair(mtu=mtu) as (ns_a, ns_b, addr_a, _addr_b):
        server = subprocess.Popen(
            _peer(ns_a, "server", addr_a), cwd=ROOT, stdout=subprocess.PIPE, text=True
        )
        try:
            assert server.stdout is not None
            assert server.stdout.readline() == "ready\n"
            client = subprocess.run(
                _peer(ns_b, "client", addr_a),
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
    for report in (json.loads(client.stdout), json.loads(served)):
        assert report["state"] == "SEARCH_COMPLETE"
        assert report["path_mtu"] == mtu - (mtu - OVERHEAD) % 4  # whole 4-byte words
        assert report["bytes"] == 64 * 16 * 1024
