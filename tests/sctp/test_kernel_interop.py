"""Interoperability with Linux's own SCTP over UDP (RFC 6951), on a real kernel.

Marked ``kernel``: where this machine's kernel lacks SCTP these run inside the QEMU VM
(tests/test_kernel_vm.py). The kernel encapsulates in UDP once ``net.sctp.udp_port``
(where it listens) and ``net.sctp.encap_port`` (where it sends) are set; both are global,
so they are restored right after each test. The sans-IO core is driven here by a
minimal blocking loop around a UDP socket; the kernel side runs in a thread.
"""

from __future__ import annotations

import os
import select
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from trio_sctls.sctp import (
    Association,
    AssociationUp,
    Endpoint,
    Event,
    MessageReceived,
    PMTUDState,
    SCTPConfig,
    ShutdownComplete,
    ShutdownReceived,
    StreamResetDone,
)
from trio_sctls.transport.udp._batch import OFFLOAD_ENV, TrainSender

from .kernel_udp import free_udp_port, kernel_sctp_over_udp

pytestmark = pytest.mark.kernel

IPPROTO_SCTP = getattr(socket, "IPPROTO_SCTP", 132)
SCTP_ENABLE_STREAM_RESET = 118
SCTP_RESET_STREAMS = 119
CONFIG = SCTPConfig(mtu=1200, rto_min=0.2, rto_initial=0.5, heartbeat_interval=1.0)


@pytest.fixture
def udp(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[TrainSender, tuple[str, int]]]:
    """Our UDP socket, sending as the udp transport does (through its TrainSender,
    trains allowed, which still sends none to an address of this host), and the
    kernel's SCTP-over-UDP address (sysctls set, then restored)."""
    monkeypatch.setenv(OFFLOAD_ENV, "on")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        kernel_port = free_udp_port()
        with kernel_sctp_over_udp(kernel_port, sock.getsockname()[1]):
            yield TrainSender(sock), ("127.0.0.1", kernel_port)


def drive(
    core: Association | Endpoint,
    out: TrainSender,
    peer: tuple[str, int],
    until: Callable[[list[Event]], bool],
    timeout: float = 20.0,
    outgoing: Callable[[bytes], bytes] = lambda data: data,
    incoming: Callable[[bytes], bytes] = lambda data: data,
) -> list[Event]:
    """Run the core on a real socket and clock until ``until(events)`` holds;
    ``outgoing`` and ``incoming`` see (and may rewrite) each datagram on its way."""
    events: list[Event] = []
    sock = out.sock
    limit = time.monotonic() + timeout
    while time.monotonic() < limit:
        now = time.monotonic()
        if isinstance(core, Endpoint):
            out._send_all([(outgoing(d), a) for d, a in core.datagrams_to_send(now)])  # type: ignore[misc]
            while (pair := core.next_event()) is not None:
                events.append(pair[1])
        else:
            out._send_all([(outgoing(data), peer) for data in core.datagrams_to_send(now)])
            while (event := core.next_event()) is not None:
                events.append(event)
        if until(events):
            return events
        deadline = core.timer_deadline()
        wait = 0.05 if deadline is None else min(0.05, max(0.0, deadline - now))
        if select.select([sock], [], [], wait)[0]:
            while True:
                try:
                    data, addr = sock.recvfrom(65536)
                except BlockingIOError:
                    break
                data = incoming(data)
                if isinstance(core, Endpoint):
                    core.receive_datagram(data, addr, time.monotonic())
                else:
                    core.receive_datagram(data, time.monotonic())
        deadline = core.timer_deadline()
        if deadline is not None and time.monotonic() >= deadline:
            core.handle_timer(time.monotonic())
    raise AssertionError(f"timed out; last events {events[-5:]}")


def _recv_exact(conn: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = conn.recv(n - len(buf))
        assert chunk, "EOF from the kernel"
        buf += chunk
    return buf


def _kernel_reads(
    big: bytes,
    client: Association,
    out: TrainSender,
    kernel: tuple[str, int],
    accepted: dict[str, socket.socket],
) -> socket.socket:
    """Drive ``client`` until the kernel server has accepted and read ``big`` (sent
    already); return the kernel's connection."""
    drive(client, out, kernel, lambda e: "conn" in accepted, 10)
    conn = accepted["conn"]
    assert isinstance(conn, socket.socket)
    conn.settimeout(20)
    got: dict[str, bytes] = {}
    reader = threading.Thread(target=lambda: got.update(big=_recv_exact(conn, len(big))))
    reader.start()
    drive(client, out, kernel, lambda e: client.queued_bytes == 0 and not reader.is_alive())
    assert got["big"] == big
    return conn


def _received(events: list[Event]) -> bytes:
    return b"".join(e.data for e in events if isinstance(e, MessageReceived))


def test_our_client_against_a_kernel_server(udp: tuple[TrainSender, tuple[str, int]]) -> None:
    out, kernel = udp
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM, IPPROTO_SCTP)
    server.bind(("127.0.0.1", 0))
    sctp_port = server.getsockname()[1]
    server.setsockopt(IPPROTO_SCTP, SCTP_ENABLE_STREAM_RESET, struct.pack("II", 0, 3))
    server.listen(1)
    server.settimeout(20)
    accepted: dict[str, socket.socket] = {}
    threading.Thread(target=lambda: accepted.update(conn=server.accept()[0]), daemon=True).start()

    client = Association(CONFIG, local_port=40000, remote_port=sctp_port)
    client.connect(time.monotonic())
    events = drive(client, out, kernel, lambda e: any(isinstance(x, AssociationUp) for x in e))
    up = next(x for x in events if isinstance(x, AssociationUp))
    assert up.outbound_streams > 0 and up.inbound_streams > 0

    big = os.urandom(100 * 1024)
    client.send(big)  # fragmented to 1200-byte packets, reassembled by the kernel
    conn = _kernel_reads(big, client, out, kernel, accepted)
    # No trains to a kernel on this host: delivered locally, a train reaches Linux's
    # SCTP-over-UDP socket whole, which crashed Debian's 6.1 kernel (see udp/_batch.py).
    assert out.gso and out.send_calls == out.datagrams_sent

    answer = os.urandom(150_000)
    conn.sendall(answer)  # one 150 kB message from the kernel
    events = drive(client, out, kernel, lambda e: len(_received(e)) >= len(answer))
    assert _received(events) == answer

    if up.reconfig:
        client.reset_streams([0], time.monotonic())
        events = drive(client, out, kernel, lambda e: StreamResetDone((0,), True) in e, 10)
        client.send(b"after our reset")
        drive(client, out, kernel, lambda e: client.queued_bytes == 0)
        assert _recv_exact(conn, 15) == b"after our reset"
        # The kernel resets its outgoing stream 0 (flags 2 = outgoing).
        conn.setsockopt(IPPROTO_SCTP, SCTP_RESET_STREAMS, struct.pack("IHHH", 0, 2, 1, 0))
        drive(client, out, kernel, lambda e: StreamResetDone((0,), False) in e, 10)
        conn.sendall(b"post")
        events = drive(client, out, kernel, lambda e: _received(e) == b"post", 10)

    client.shutdown(time.monotonic())
    events = drive(client, out, kernel, lambda e: client.closed, 10)
    assert events[-1] == ShutdownComplete()
    assert conn.recv(10) == b""  # the kernel saw a graceful shutdown
    conn.close()
    server.close()


@contextmanager
def kernel_client_side(
    kernel_client: socket.socket,
    port: int,
    message: bytes,
    before_sending: Callable[[], object] = lambda: None,
) -> Iterator[dict[str, bytes]]:
    """Run ``kernel_client`` in a thread: connect to our endpoint's ``port``, send
    ``message``, read a 5-byte reply into ``["reply"]`` of what this yields, then shut
    its sending side down (our end sees a graceful SHUTDOWN). Joined and closed on
    exit."""
    result: dict[str, bytes] = {}

    def kernel_side() -> None:
        kernel_client.connect(("127.0.0.1", port))
        before_sending()
        kernel_client.sendall(message)
        result["reply"] = _recv_exact(kernel_client, 5)
        kernel_client.shutdown(socket.SHUT_WR)

    thread = threading.Thread(target=kernel_side, daemon=True)
    thread.start()
    try:
        yield result
    finally:
        thread.join(5)
        kernel_client.close()


def test_a_kernel_client_against_our_endpoint(udp: tuple[TrainSender, tuple[str, int]]) -> None:
    out, kernel = udp
    endpoint = Endpoint(CONFIG, local_port=40001)
    kernel_client = socket.socket(socket.AF_INET, socket.SOCK_STREAM, IPPROTO_SCTP)
    kernel_client.settimeout(20)
    with kernel_client_side(kernel_client, 40001, b"from the kernel" * 1000) as result:
        events = drive(endpoint, out, kernel, lambda e: len(_received(e)) >= 15_000)
        assert _received(events) == b"from the kernel" * 1000
        (assoc,) = endpoint.associations
        assoc.send(b"reply")
        events = drive(endpoint, out, kernel, lambda e: assoc.closed, 20)
        assert result["reply"] == b"reply"
        assert events[-2:] == [ShutdownReceived(), ShutdownComplete()]


def test_the_kernel_answers_our_path_mtu_probes(
    udp: tuple[TrainSender, tuple[str, int]],
) -> None:
    # Padded HEARTBEATs (RFC 8899 with RFC 4820 PAD chunks) to a kernel peer: it must
    # answer each, so our search climbs from 1200 bytes to the loopback's ceiling.
    sock, kernel = udp
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM, IPPROTO_SCTP)
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(20)
    accepted: dict[str, socket.socket] = {}
    threading.Thread(target=lambda: accepted.update(conn=server.accept()[0]), daemon=True).start()
    config = SCTPConfig(mtu=65535, ip_header_size=20, rto_min=0.2, rto_initial=0.5)
    client = Association(config, local_port=40002, remote_port=server.getsockname()[1])
    client.connect(time.monotonic())
    drive(client, sock, kernel, lambda e: client.established)
    first = os.urandom(100 * 1024)
    client.send(first)  # the search starts with the first DATA
    conn = _kernel_reads(first, client, sock, kernel, accepted)
    drive(client, sock, kernel, lambda e: client.pmtud_state is PMTUDState.SEARCH_COMPLETE)
    assert client.path_mtu > 60_000
    big = os.urandom(200 * 1024)
    client.send(big)  # in 64 KiB packets now
    _kernel_reads(big, client, sock, kernel, accepted)
    client.shutdown(time.monotonic())
    events = drive(client, sock, kernel, lambda e: client.closed, 10)
    assert events[-1] == ShutdownComplete()
    conn.close()
    server.close()
