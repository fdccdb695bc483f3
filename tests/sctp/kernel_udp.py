"""Linux's own SCTP over UDP (RFC 6951) as a peer for ours, for the kernel-marked tests.

The kernel encapsulates once two global sysctls are set: ``net.sctp.udp_port`` (the UDP
port it receives on) and ``net.sctp.encap_port`` (the UDP port it sends to). Being
global, they are restored when the test is done.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

SYSCTL = Path("/proc/sys/net/sctp")


def free_udp_port() -> int:
    """A UDP port of 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextmanager
def kernel_sctp_over_udp(kernel_port: int, our_port: int) -> Iterator[None]:
    """Have the kernel receive SCTP over UDP on ``kernel_port`` and send it to
    ``our_port``, with stream reset (RFC 6525) enabled, until the block ends.

    Skips the test where the kernel cannot (Linux < 5.11) or we may not (not root).
    """
    if not (SYSCTL / "encap_port").exists() or not os.access(SYSCTL / "udp_port", os.W_OK):
        pytest.skip("needs net.sctp.udp_port / encap_port (Linux >= 5.11) and root")
    names = ("udp_port", "encap_port", "reconf_enable")
    saved = {n: (SYSCTL / n).read_text() for n in names if (SYSCTL / n).exists()}
    try:
        (SYSCTL / "udp_port").write_text(str(kernel_port))
        (SYSCTL / "encap_port").write_text(str(our_port))
        if "reconf_enable" in saved:
            (SYSCTL / "reconf_enable").write_text("1")
        yield
    finally:
        for name, value in saved.items():
            (SYSCTL / name).write_text(value)


@contextmanager
def kernel_auth_enabled(value: int = 1) -> Iterator[None]:
    """``net.sctp.auth_enable`` at ``value`` until the block ends (Linux reads it when a
    socket is created, so create the kernel's sockets inside the block)."""
    path = SYSCTL / "auth_enable"
    saved = path.read_text()
    try:
        path.write_text(str(value))
        yield
    finally:
        path.write_text(saved)
