"""SCTP-AUTH (RFC 4895) interop with Linux's own SCTP over UDP (RFC 6951), in the VM.

Both directions, with the kernel sockets set up the way RFC 6458 says (``sysctl
net.sctp.auth_enable=1``, DATA in ``SCTP_AUTH_CHUNK``, a shared key through
``SCTP_AUTH_KEY`` made active with ``SCTP_AUTH_ACTIVE_KEY``) and our core holding the
same key: the kernel accepts our authenticated DATA and we accept its AUTH'd DATA; the
AUTH chunks are checked in the datagrams themselves. A tampered packet (a user data
byte flipped, the CRC32c made right again, the HMAC left alone) is dropped by each
side: what is delivered is the original, which only the retransmission carried.
"""

from __future__ import annotations

import os
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace

import pytest

from trio_sctls.sctp import (
    Association,
    AssociationAborted,
    AssociationUp,
    Endpoint,
    Event,
    Packet,
    ShutdownComplete,
)
from trio_sctls.sctp._auth import AssociationAuth, is_auth_refusal
from trio_sctls.sctp._auth_wire import AuthChunk
from trio_sctls.sctp._chunks import DataChunk
from trio_sctls.sctp._packet import finish_packet
from trio_sctls.transport._linux import (
    _AUTHKEY,
    _AUTHKEYID,
    _SCTP_AUTH_ACTIVE_KEY,
    _SCTP_AUTH_CHUNK,
    _SCTP_AUTH_KEY,
)
from trio_sctls.transport.udp._batch import TrainSender

from .kernel_udp import kernel_auth_enabled
from .test_kernel_interop import (
    CONFIG,
    IPPROTO_SCTP,
    _received,
    _recv_exact,
    drive,
    kernel_client_side,
    udp,
)

pytestmark = pytest.mark.kernel

__all__ = ["udp"]  # the fixture, shared with test_kernel_interop

AUTH_CONFIG = replace(CONFIG, auth=True)
SECRET = bytes(range(1, 65))  # the endpoint-pair shared key, as DTLS would export it
KEY = 1


def kernel_socket(auth: bool = True) -> socket.socket:
    """A kernel SCTP socket created with auth_enable set (Linux reads it then), with DATA
    authenticated and key 1 active (before connect or listen)."""
    with kernel_auth_enabled(1 if auth else 0):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, IPPROTO_SCTP)
    if auth:
        sock.setsockopt(IPPROTO_SCTP, _SCTP_AUTH_CHUNK, bytes([DataChunk.CODE]))
        key = _AUTHKEY.pack(0, KEY, len(SECRET)) + SECRET
        sock.setsockopt(IPPROTO_SCTP, _SCTP_AUTH_KEY, key)
        sock.setsockopt(IPPROTO_SCTP, _SCTP_AUTH_ACTIVE_KEY, _AUTHKEYID.pack(0, KEY))
    return sock


def use_the_key(auth: AssociationAuth | None) -> AssociationAuth:
    assert auth is not None
    auth.add_key(KEY, SECRET)
    auth.activate_key(KEY)
    return auth


def _data_offset(datagram: bytes) -> int | None:
    offset = 12
    while offset + 4 <= len(datagram):
        kind, _flags, length = struct.unpack_from("!BBH", datagram, offset)
        if kind == DataChunk.CODE:
            return offset
        offset += (length + 3) & ~3
    return None


class Wire:
    """Records the datagrams both ways; tampers with the next DATA one way when asked."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.received: list[bytes] = []
        #: "sent", "received": tamper with the next DATA datagram going that way.
        self.tamper: set[str] = set()
        self.tampered = 0

    def _tamper(self, datagram: bytes) -> bytes:
        offset = _data_offset(datagram)
        assert offset is not None
        buf = bytearray(datagram)
        buf[offset + 16] ^= 0x55  # the first byte of the user data
        buf[8:12] = bytes(4)
        self.tampered += 1
        return finish_packet(buf)

    def drive(
        self,
        core: Association | Endpoint,
        sock: TrainSender,
        peer: tuple[str, int],
        until: Callable[[list[Event]], bool],
        timeout: float = 20.0,
    ) -> list[Event]:
        """:func:`drive` with this wire between the core and the socket."""
        return drive(core, sock, peer, until, timeout, self.outgoing, self.incoming)

    def outgoing(self, datagram: bytes) -> bytes:
        return self._pass(datagram, self.sent, "sent")

    def incoming(self, datagram: bytes) -> bytes:
        return self._pass(datagram, self.received, "received")

    def _pass(self, datagram: bytes, log: list[bytes], way: str) -> bytes:
        log.append(datagram)
        if way in self.tamper and _data_offset(datagram) is not None:
            self.tamper.discard(way)
            return self._tamper(datagram)
        return datagram


def auth_before_data(datagrams: list[bytes]) -> list[AuthChunk]:
    """The AUTH chunk of each datagram carrying DATA, checked to come before the DATA."""
    found = []
    for datagram in datagrams:
        chunks = Packet.parse(datagram).chunks
        kinds = [type(c) for c in chunks]
        if DataChunk in kinds:
            assert AuthChunk in kinds, f"DATA without AUTH on the wire: {kinds}"
            assert kinds.index(AuthChunk) < kinds.index(DataChunk)
            auth = chunks[kinds.index(AuthChunk)]
            assert isinstance(auth, AuthChunk)
            found.append(auth)
    assert found
    return found


@pytest.fixture
def kernel_server() -> Iterator[tuple[socket.socket, int]]:
    server = kernel_socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(20)
    yield server, server.getsockname()[1]
    server.close()


def test_our_authenticated_client_and_a_kernel_server(
    udp: tuple[TrainSender, tuple[str, int]], kernel_server: tuple[socket.socket, int]
) -> None:
    sock, kernel = udp
    server, sctp_port = kernel_server
    accepted: dict[str, socket.socket] = {}
    threading.Thread(target=lambda: accepted.update(conn=server.accept()[0]), daemon=True).start()
    wire = Wire()
    client = Association(AUTH_CONFIG, local_port=40010, remote_port=sctp_port)
    client.connect(time.monotonic())
    wire.drive(client, sock, kernel, lambda e: any(isinstance(x, AssociationUp) for x in e))
    auth = use_the_key(client.auth)

    # Ours to the kernel: the first DATA packet is tampered with and must be dropped.
    wire.tamper.add("sent")
    message = os.urandom(3000)
    client.send(message)
    wire.drive(client, sock, kernel, lambda e: "conn" in accepted, 10)
    conn = accepted["conn"]
    conn.settimeout(20)
    got: dict[str, bytes] = {}
    reader = threading.Thread(target=lambda: got.update(data=_recv_exact(conn, len(message))))
    reader.start()
    wire.drive(client, sock, kernel, lambda e: client.queued_bytes == 0 and not reader.is_alive())
    assert wire.tampered == 1
    assert got["data"] == message  # the kernel delivered the retransmission, not the forgery
    assert {a.key_id for a in auth_before_data(wire.sent)} == {KEY}

    # The kernel's to us: the first DATA packet is tampered with; we drop and count it.
    wire.tamper.add("received")
    answer = os.urandom(3000)
    conn.sendall(answer)
    events = wire.drive(client, sock, kernel, lambda e: len(_received(e)) >= len(answer))
    assert wire.tampered == 2
    assert _received(events) == answer
    assert auth.counters.bad_hmac == 1
    assert auth.counters.dropped_chunks >= 1
    assert {a.key_id for a in auth_before_data(wire.received)} == {KEY}

    client.shutdown(time.monotonic())
    events = wire.drive(client, sock, kernel, lambda e: client.closed, 10)
    assert events[-1] == ShutdownComplete()
    conn.close()


def test_a_kernel_client_authenticates_to_our_endpoint(
    udp: tuple[TrainSender, tuple[str, int]],
) -> None:
    sock, kernel = udp
    endpoint = Endpoint(AUTH_CONFIG, local_port=40011)
    kernel_client = kernel_socket()
    kernel_client.settimeout(20)
    keys_ready = threading.Event()
    message = b"authenticated by the kernel " * 100
    with kernel_client_side(
        kernel_client, 40011, message, before_sending=lambda: keys_ready.wait(10)
    ) as result:
        wire = Wire()
        wire.drive(endpoint, sock, kernel, lambda e: any(isinstance(x, AssociationUp) for x in e))
        (assoc,) = endpoint.associations
        auth = use_the_key(assoc.auth)
        wire.tamper.add("received")
        keys_ready.set()
        events = wire.drive(endpoint, sock, kernel, lambda e: len(_received(e)) >= len(message))
        assert _received(events) == message
        assert auth.counters.bad_hmac == 1
        wire.tamper.add("sent")
        assoc.send(b"reply")
        wire.drive(endpoint, sock, kernel, lambda e: assoc.closed, 20)
        assert wire.tampered == 2
        assert result["reply"] == b"reply"  # not the tampered b"'eply"
        auth_before_data(wire.sent)
        auth_before_data(wire.received)


def test_our_client_requiring_auth_refuses_a_kernel_server_without_it(
    udp: tuple[TrainSender, tuple[str, int]],
) -> None:
    sock, kernel = udp
    server = kernel_socket(auth=False)
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    client = Association(AUTH_CONFIG, local_port=40012, remote_port=server.getsockname()[1])
    client.connect(time.monotonic())
    events = drive(client, sock, kernel, lambda e: client.closed, 10)
    aborted = [e for e in events if isinstance(e, AssociationAborted)]
    assert aborted and not aborted[0].by_peer
    assert is_auth_refusal(aborted[0].causes)
    server.close()
