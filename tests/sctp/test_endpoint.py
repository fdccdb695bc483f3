"""The Endpoint: stateless INIT handling, many peers, out-of-the-blue packets."""

from __future__ import annotations

import random
from collections.abc import Hashable

import pytest

from trio_sctls.sctp import (
    Association,
    AssociationAccepted,
    AssociationUp,
    Endpoint,
    LocalProtocolError,
    MessageReceived,
    Packet,
    ShutdownComplete,
)
from trio_sctls.sctp._causes import UnrecognizedChunkType
from trio_sctls.sctp._chunks import (
    AbortChunk,
    Chunk,
    CookieEchoChunk,
    DataChunk,
    ErrorChunk,
    InitAckChunk,
    InitChunk,
    SackChunk,
    ShutdownAckChunk,
    ShutdownCompleteChunk,
    UnknownChunk,
)
from trio_sctls.sctp._params import (
    SupportedExtensions,
    UnknownParam,
    UnrecognizedParam,
)

from .harness import chunks_of, connected, fast_config, pair


def _server(**kw: object) -> Endpoint:
    return Endpoint(fast_config(**kw), local_port=9899, rng=random.Random(7))


def _init(tag: int = 0x1234, params: tuple[object, ...] = ()) -> bytes:
    chunk = InitChunk(tag, 65536, 5, 5, 1000, params)  # type: ignore[arg-type]
    return bytes(Packet(5000, 9899, 0, [chunk]))


def test_an_endpoint_accepts_an_association() -> None:
    net = connected(pair(endpoint=True))
    assert net.b.events[:2] == [AssociationAccepted(), AssociationUp(10, 10, True)]
    net.a.assoc.send(b"hi endpoint", stream=4)
    net.b.assoc.send(b"hi client", stream=5)
    assert net.run_until(lambda: net.b.messages() == [b"hi endpoint"] and bool(net.a.messages()))
    assert net.a.messages() == [b"hi client"]
    net.b.assoc.shutdown(net.now)
    assert net.run_until(lambda: net.a.assoc.closed and net.b.assoc.closed)
    assert net.b.events[-1] == ShutdownComplete()
    net.run_for(1)
    assert net.b.inner.associations == []  # type: ignore[union-attr]


def test_init_creates_no_state_before_a_valid_cookie() -> None:
    server = _server()
    for tag in range(1, 1001):
        server.receive_datagram(_init(tag), ("198.51.100.1", 5000 + tag), 0.0)
    answers = server.datagrams_to_send(0.0)
    assert len(answers) == 1000
    assert server.associations == [] and server.timer_deadline() is None
    data, addr = answers[0]
    packet = Packet.parse(data)
    assert packet.verification_tag == 1 and addr == ("198.51.100.1", 5001)
    assert isinstance(packet.chunks[0], InitAckChunk)


def test_a_cookie_is_bound_to_the_address_it_was_sent_to() -> None:
    server = _server()
    server.receive_datagram(_init(), ("192.0.2.1", 5000), 0.0)
    ((data, _),) = server.datagrams_to_send(0.0)
    ack = Packet.parse(data).chunks[0]
    assert isinstance(ack, InitAckChunk)
    cookie = next(p.cookie for p in ack.params if hasattr(p, "cookie"))
    echo = bytes(Packet(5000, 9899, ack.initiate_tag, [CookieEchoChunk(cookie)]))
    server.receive_datagram(echo, ("192.0.2.99", 5000), 0.1)  # another address: ignored
    assert server.associations == [] and server.datagrams_to_send(0.1) == []
    forged = bytearray(cookie)
    forged[10] ^= 1
    bad = bytes(Packet(5000, 9899, ack.initiate_tag, [CookieEchoChunk(bytes(forged))]))
    server.receive_datagram(bad, ("192.0.2.1", 5000), 0.1)  # tampered: ignored
    assert server.associations == []
    server.receive_datagram(echo, ("192.0.2.1", 5000), 0.1)  # the real thing
    assert len(server.associations) == 1
    assert server.next_event() is not None


def test_unknown_init_parameters_follow_the_high_bit_rules() -> None:
    server = _server()
    params = (
        UnknownParam(0xC001, b"report me"),  # skip and report
        UnknownParam(0x8002, b"skip me"),  # skip silently
        SupportedExtensions((0x82,)),
        UnknownParam(0x4003, b"stop and report"),  # stop here, report
        SupportedExtensions(()),  # never read
    )
    server.receive_datagram(_init(params=params), ("192.0.2.1", 5000), 0.0)
    ((data, _),) = server.datagrams_to_send(0.0)
    ack = Packet.parse(data).chunks[0]
    assert isinstance(ack, InitAckChunk)
    reported = [p.param for p in ack.params if isinstance(p, UnrecognizedParam)]
    assert reported == [bytes(UnknownParam(0xC001, b"report me")), bytes(params[3])]


def test_invalid_init_is_answered_with_abort() -> None:
    server = _server()
    bad = bytes(Packet(5000, 9899, 0, [InitChunk(0x55, 65536, 0, 5, 1)]))  # OS = 0
    server.receive_datagram(bad, "peer", 0.0)
    ((data, _),) = server.datagrams_to_send(0.0)
    answer = Packet.parse(data)
    assert answer.verification_tag == 0x55 and isinstance(answer.chunks[0], AbortChunk)
    assert not answer.chunks[0].reflected
    zero_tag = bytes(Packet(5000, 9899, 0, [InitChunk(0, 65536, 5, 5, 1)]))
    server.receive_datagram(zero_tag, "peer", 0.0)
    assert server.datagrams_to_send(0.0) == []  # Section 3.3.2: silently discarded


def test_out_of_the_blue_packets_are_answered_per_section_8_4() -> None:
    server = _server()
    addr = ("192.0.2.1", 5000)

    def answer(*chunks: Chunk) -> list[Packet]:
        server.receive_datagram(bytes(Packet(5000, 9899, 0xABCD, list(chunks))), addr, 0.0)
        return [Packet.parse(d) for d, _ in server.datagrams_to_send(0.0)]

    (p,) = answer(DataChunk(1, 0, 0, 0, b"x"))
    assert p.verification_tag == 0xABCD and p.chunks == [AbortChunk(reflected=True)]
    (p,) = answer(ShutdownAckChunk())
    assert p.verification_tag == 0xABCD and p.chunks == [ShutdownCompleteChunk(reflected=True)]
    assert answer(AbortChunk()) == []
    assert answer(ShutdownCompleteChunk()) == []
    assert answer(SackChunk(1, 1), AbortChunk()) == []
    assert server.associations == []


def test_many_peers_on_one_endpoint() -> None:
    config = fast_config()
    server = Endpoint(config, local_port=9899, rng=random.Random(1))
    clients = {
        ("10.0.0.1", 9899 + i): Association(config, local_port=5000, remote_port=9899)
        for i in range(5)
    }
    now = 0.0
    for c in clients.values():
        c.connect(now)
    received: dict[Hashable, list[bytes]] = {}
    for step in range(200):
        now = step * 0.01
        for addr, c in clients.items():
            for d in c.datagrams_to_send(now):
                server.receive_datagram(d, addr, now)
            if c.established and c.queued_bytes == 0 and step == 50:
                c.send(repr(addr).encode())
        for d, to in server.datagrams_to_send(now):
            clients[to].receive_datagram(d, now)  # type: ignore[index]
        while (pair_ := server.next_event()) is not None:
            assoc, ev = pair_
            if isinstance(ev, MessageReceived):
                received[server.address_of(assoc)] = [ev.data]
        deadline = server.timer_deadline()
        if deadline is not None and deadline <= now:
            server.handle_timer(now)
    assert len(server.associations) == 5
    assert received == {addr: [repr(addr).encode()] for addr in clients}


def test_a_peer_that_changes_udp_port_is_followed() -> None:
    net = pair(endpoint=True)
    net.b.peer_addr = ("peer", 0)
    connected(net)
    net.b.peer_addr = ("peer", 1)  # NAT rebinding: the client's UDP port changed
    endpoint = net.b.inner
    assert isinstance(endpoint, Endpoint)
    net.a.assoc.send(b"after rebinding")
    assert net.run_until(lambda: net.b.messages() == [b"after rebinding"])
    assert endpoint.address_of(net.b.assoc) == ("peer", 1)


def test_unknown_chunk_high_bits_in_an_established_association() -> None:
    net = connected(pair())
    b = net.b.assoc
    tag = b.verification_tag
    reported: list[bytes] = []

    def watch(i: int, d: bytes, now: float) -> list[bytes]:
        for c in chunks_of(d):
            if isinstance(c, ErrorChunk):
                reported.extend(x.data for x in c.causes if isinstance(x, UnrecognizedChunkType))
        # We impersonate the client below, so the real one must not see the SACKs for
        # TSNs it never sent.
        return [d] if i == 0 else []

    net.hook = watch
    tsn = net.b.assoc._recv.cum_wire  # type: ignore[union-attr]

    def send(chunk_type: int, n: int) -> None:
        unknown = UnknownChunk(chunk_type, 0, b"??")
        data = DataChunk((tsn + n) & 0xFFFFFFFF, 0, n - 1, 0, bytes([n]))
        net.inject(1, bytes(Packet(5000, 9899, tag, [unknown, data])))
        net.run_for(0.5)

    send(0x3E, 1)  # 00: stop, discard the rest of the packet, no report
    assert net.b.messages() == [] and reported == []
    send(0x7E, 1)  # 01: stop, discard, report
    assert net.b.messages() == [] and reported == [bytes(UnknownChunk(0x7E, 0, b"??"))]
    send(0xBE, 1)  # 10: skip it, process the DATA, no report
    assert net.b.messages() == [b"\x01"] and len(reported) == 1
    send(0xFE, 2)  # 11: skip it, process the DATA, report
    assert net.b.messages() == [b"\x01", b"\x02"] and len(reported) == 2
    assert b.established


def test_connecting_twice_to_the_same_peer_is_refused() -> None:
    client = Endpoint(fast_config(), local_port=5000, accept=False)
    client.connect(("192.0.2.1", 9899), 0.0)
    with pytest.raises(LocalProtocolError):
        client.connect(("192.0.2.1", 9899), 0.0)
    client.connect(("192.0.2.1", 9900), 0.0, remote_port=9899)  # another address is fine
    assert len(client.associations) == 2
