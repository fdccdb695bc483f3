"""Attacks on associations and endpoints, against the sans-IO core on a simulated clock.

Off-path attackers (who do not know the verification tag): wrong-tag packets of every
kind, forged / expired / replayed COOKIE ECHOs, INIT floods. On-path or misbehaving
peers (who do): huge windows and stream counts, a message that never ends, floods of
stream reset requests, packets crafted to make our answers bigger than themselves.
"""

from __future__ import annotations

import gc
import random
import tracemalloc

import pytest

from trio_sctls.sctp import (
    Association,
    AssociationAborted,
    AssociationUp,
    Endpoint,
    Packet,
    SCTPConfig,
    State,
)
from trio_sctls.sctp._causes import OutOfResource, UnrecognizedChunkType
from trio_sctls.sctp._chunks import (
    AbortChunk,
    Chunk,
    CookieEchoChunk,
    DataChunk,
    ErrorChunk,
    HeartbeatChunk,
    InitAckChunk,
    InitChunk,
    ReconfigChunk,
    SackChunk,
    ShutdownAckChunk,
    ShutdownChunk,
    ShutdownCompleteChunk,
    UnknownChunk,
)
from trio_sctls.sctp._inbound import MAX_DEFERRED_RESETS, MIN_CHARGE
from trio_sctls.sctp._params import (
    IncomingSSNResetRequest,
    OutgoingSSNResetRequest,
    ReconfigResponse,
    ReconfigResult,
    StateCookieParam,
    UnknownParam,
)

from .harness import Net, connected, fast_config, pair

CLIENT_PORT, SERVER_PORT = 5000, 9899


def to_server(net: Net, tag: int, *chunks: Chunk) -> list[bytes]:
    """Feed the server one packet from the client's ports; return what it answers."""
    net.b.receive(bytes(Packet(CLIENT_PORT, SERVER_PORT, tag, list(chunks))), net.now)
    return net.b.outgoing(net.now)


def still_works(net: Net) -> None:
    net.a.assoc.send(b"ping", stream=1)
    net.b.assoc.send(b"pong", stream=2)
    assert net.run_until(lambda: b"ping" in net.b.messages() and b"pong" in net.a.messages())


# -- off-path: the wrong verification tag (Section 8.5) ----------------------------------


WRONG_TAG_CHUNKS: list[Chunk] = [
    DataChunk(1, 0, 0, 0, b"forged"),
    SackChunk(0, 1 << 20),
    HeartbeatChunk(b"x" * 8),
    ShutdownChunk(0),
    ShutdownAckChunk(),
    ErrorChunk((OutOfResource(),)),
    ReconfigChunk((OutgoingSSNResetRequest(0, 0, 0, ()),)),
    AbortChunk(),  # T bit clear: must carry our own tag
    ShutdownCompleteChunk(),
    UnknownChunk(0xFF, 0, b"report me"),
]


@pytest.mark.parametrize("chunk", WRONG_TAG_CHUNKS, ids=lambda c: type(c).__name__)
def test_a_wrong_tag_is_dropped_silently(chunk: Chunk) -> None:
    net = connected(pair())
    tag = net.b.assoc.verification_tag
    for wrong in (0, tag ^ 1, tag ^ 0x80000000, net.a.assoc.verification_tag):
        if isinstance(chunk, AbortChunk | ShutdownCompleteChunk) and wrong == 0:
            continue  # (tag 0 is never valid; covered by the others)
        assert to_server(net, wrong, chunk) == []  # not even an ABORT or an ERROR
    assert net.b.assoc.established and not net.b.of_type(AssociationAborted)
    still_works(net)


@pytest.mark.parametrize("chunk", [AbortChunk(), ShutdownCompleteChunk()])
def test_t_bit_rules_for_abort_and_shutdown_complete(chunk: Chunk) -> None:
    # Section 8.5.1 (B), (C): T bit set -> the packet must carry the *peer's* tag; T bit
    # clear -> ours. Each of the two wrong combinations is ignored.
    net = connected(pair())
    ours, theirs = net.b.assoc.verification_tag, net.a.assoc.verification_tag
    reflected = type(chunk)(reflected=True)  # type: ignore[call-arg]
    assert to_server(net, ours, reflected) == []
    assert to_server(net, theirs, chunk) == []
    assert net.b.assoc.established
    if isinstance(chunk, AbortChunk):
        to_server(net, theirs, reflected)  # the right combination does abort
        assert net.b.assoc.closed and net.b.assoc.next_event() is not None


def test_a_shutdown_with_a_wrong_tag_does_not_start_a_shutdown() -> None:
    net = connected(pair())
    tag = net.b.assoc.verification_tag
    to_server(net, tag ^ 0xFFFF, ShutdownChunk(0))
    assert net.b.assoc.state is State.ESTABLISHED
    still_works(net)


# -- COOKIE ECHO: forged, expired, replayed (Sections 5.1.5, 5.2.4) ----------------------


def _server(**config: object) -> Endpoint:
    return Endpoint(fast_config(**config), local_port=SERVER_PORT, rng=random.Random(1))


def _init(tag: int = 77, **fields: int) -> bytes:
    values = {"a_rwnd": 65536, "os": 10, "mis": 10, "tsn": 1000} | fields
    init = InitChunk(tag, values["a_rwnd"], values["os"], values["mis"], values["tsn"])
    return bytes(Packet(CLIENT_PORT, SERVER_PORT, 0, [init]))


def _cookie(server: Endpoint, addr: object, now: float = 0.0, **fields: int) -> tuple[int, bytes]:
    server.receive_datagram(_init(**fields), addr, now)
    ((data, _),) = server.datagrams_to_send(now)
    ack = Packet.parse(data).chunks[0]
    assert isinstance(ack, InitAckChunk)
    cookie = next(p.cookie for p in ack.params if isinstance(p, StateCookieParam))
    return ack.initiate_tag, cookie


def _echo(tag: int, cookie: bytes) -> bytes:
    return bytes(Packet(CLIENT_PORT, SERVER_PORT, tag, [CookieEchoChunk(cookie)]))


def test_forged_cookies_create_nothing() -> None:
    server = _server()
    addr = ("192.0.2.1", 5000)
    tag, cookie = _cookie(server, addr)
    forgeries = [
        b"",
        cookie[:-1],
        cookie + b"\0",
        bytes(len(cookie)),
        cookie[:-32] + bytes(32),  # right body, no MAC
        *(cookie[:i] + bytes([cookie[i] ^ 1]) + cookie[i + 1 :] for i in range(len(cookie))),
    ]
    for forged in forgeries:
        server.receive_datagram(_echo(tag, forged), addr, 0.1)
    # The right cookie with the wrong tag in the common header is refused too.
    server.receive_datagram(_echo(tag ^ 1, cookie), addr, 0.1)
    assert server.associations == []
    assert server.datagrams_to_send(0.1) == []
    assert server.next_event() is None and server.timer_deadline() is None


def test_an_expired_cookie_gets_a_stale_cookie_error_and_no_state() -> None:
    server = _server(cookie_lifetime=5.0)
    addr = ("192.0.2.1", 5000)
    tag, cookie = _cookie(server, addr)
    server.receive_datagram(_echo(tag, cookie), addr, 6.0)
    assert server.associations == []
    ((data, to),) = server.datagrams_to_send(6.0)
    assert to == addr
    (err,) = Packet.parse(data).chunks
    assert isinstance(err, ErrorChunk)
    assert type(err.causes[0]).__name__ == "StaleCookie"
    assert server.next_event() is None and server.timer_deadline() is None


def test_a_replayed_cookie_does_not_create_a_second_association() -> None:
    server = _server()
    addr = ("192.0.2.1", 5000)
    tag, cookie = _cookie(server, addr)
    server.receive_datagram(_echo(tag, cookie), addr, 0.1)
    server.datagrams_to_send(0.1)
    (assoc,) = server.associations
    events = []
    while (e := server.next_event()) is not None:
        events.append(e[1])
    assert sum(isinstance(e, AssociationUp) for e in events) == 1
    # Section 5.2.4, case D: the same cookie again only gets another COOKIE ACK.
    for i in range(5):
        server.receive_datagram(_echo(tag, cookie), addr, 0.2 + i)
        out = server.datagrams_to_send(0.2 + i)
        assert all(
            type(c).__name__ == "CookieAckChunk" for d, _ in out for c in Packet.parse(d).chunks
        )
    assert server.associations == [assoc] and assoc.established
    assert server.next_event() is None
    # From another address (another peer replaying it) it is not ours to open.
    server.receive_datagram(_echo(tag, cookie), ("203.0.113.9", 5000), 1.0)
    assert server.associations == [assoc]
    # After the association ended, a replay (still fresh) opens nothing new either.
    assoc.abort()
    server.datagrams_to_send(2.0)
    while server.next_event() is not None:
        pass
    assert server.associations == []
    server.receive_datagram(_echo(tag, cookie), addr, 3.0)
    server.datagrams_to_send(3.0)
    assert server.associations == [] and server.next_event() is None


def test_a_replayed_cookie_on_a_listening_association_after_it_closed() -> None:
    net = connected(pair())
    server = net.b.assoc
    captured = bytes(Packet(CLIENT_PORT, SERVER_PORT, server.verification_tag, []))
    assert captured  # (the server's tag)
    server.abort()
    net.run_for(1)
    assert server.closed
    # A used association never comes back to life, whatever it is fed.
    server.receive_datagram(_init(), net.now)
    assert server.closed


# -- INIT floods: no state before a valid COOKIE ECHO ------------------------------------


def test_an_init_flood_keeps_no_state() -> None:
    server = _server()
    for i in range(500):  # warm up caches and the allocator
        server.receive_datagram(_init(i + 1), ("198.51.100.7", 1024 + i), 0.0)
        server.datagrams_to_send(0.0)
    gc.collect()
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        rng = random.Random(7)
        for i in range(10_000):
            addr = (f"198.51.{rng.randrange(256)}.{rng.randrange(256)}", rng.randrange(1, 65536))
            server.receive_datagram(
                _init(rng.randrange(1, 1 << 32), os=65535, mis=65535, a_rwnd=2**32 - 1),
                addr,
                i * 0.001,
            )
            assert len(server.datagrams_to_send(i * 0.001)) == 1
        gc.collect()
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert server.associations == [] and server.next_event() is None
    assert server.timer_deadline() is None
    assert not server._by_addr and not server._by_tag and not server._addr
    assert not server._dirty and not server._ready and not server._linger
    assert after - before < 64 * 1024  # flat: nothing per INIT


# -- misbehaving peers with the right tag ------------------------------------------------


def test_huge_windows_and_stream_counts_are_bounded_by_what_we_negotiated() -> None:
    server = _server(outbound_streams=4, max_inbound_streams=3)
    addr = ("192.0.2.1", 5000)
    tag, cookie = _cookie(server, addr, os=65535, mis=65535, a_rwnd=2**32 - 1)
    server.receive_datagram(_echo(tag, cookie), addr, 0.1)
    server.datagrams_to_send(0.1)
    (assoc,) = server.associations
    assert (assoc.outbound_streams, assoc.inbound_streams) == (4, 3)
    assert assoc._recv is not None and len(assoc._recv._streams) == 3
    assert assoc._send is not None and len(assoc._send._ssn) == 4
    assert assoc.peer_rwnd == 2**32 - 1  # a number, not an allocation
    # DATA on stream 65534 is acknowledged and reported, never stored.
    peer_tag = assoc.verification_tag
    data = DataChunk(1000, 65534, 0, 0, b"x" * 100)
    server.receive_datagram(bytes(Packet(CLIENT_PORT, SERVER_PORT, peer_tag, [data])), addr, 0.2)
    out = [c for d, _ in server.datagrams_to_send(0.2) for c in Packet.parse(d).chunks]
    assert any(isinstance(c, ErrorChunk) for c in out)
    assert assoc._recv.buffered == 0 and assoc.established
    # Sending with a 4 GB window still goes by cwnd: a few packets, not the whole queue.
    for _ in range(100):
        assoc.send(b"y" * 1000, stream=1)
    sent = server.datagrams_to_send(0.3)
    assert 0 < sum(len(d) for d, _ in sent) < 10 * assoc.config.max_packet_size


def _endless_message(net: Net, chunks: int, size: int, *, ordered_gaps: bool) -> None:
    """The client's peer sends fragments of one message that never ends."""
    b = net.b.assoc
    recv = b._recv
    assert recv is not None
    tsn = recv.cum + 1
    tag = b.verification_tag
    for i in range(chunks):
        t = tsn + (2 * i if ordered_gaps else i)
        frag = DataChunk(t & 0xFFFFFFFF, 0, 0, 0, b"z" * size, beginning=i == 0, end=False)
        net.b.receive(bytes(Packet(CLIENT_PORT, SERVER_PORT, tag, [frag])), net.now)
        net.b.outgoing(net.now)
        if b.closed:
            return
        assert recv.buffered + recv.unconsumed <= b.config.receive_buffer + b.config.max_packet_size


def test_a_message_that_never_ends_is_aborted_at_max_message_size() -> None:
    # 8 GiB announced as fragments without an E bit: we stop at max_message_size.
    config = fast_config(max_message_size=64 * 1024, receive_buffer=1024 * 1024)
    net = connected(pair(config))
    tracemalloc.start()
    try:
        _endless_message(net, chunks=8 * 1024 * 1024, size=1024, ordered_gaps=False)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert net.b.assoc.closed
    net.b.drain_events()
    (aborted,) = net.b.of_type(AssociationAborted)
    assert isinstance(aborted, AssociationAborted) and not aborted.by_peer
    assert any(isinstance(c, OutOfResource) for c in aborted.causes)
    assert peak < 4 * 64 * 1024 + 256 * 1024


def test_fragments_that_never_join_are_bounded_by_the_window() -> None:
    # Every other TSN: no run ever grows, but the window stops them.
    config = fast_config(max_message_size=64 * 1024, receive_buffer=128 * 1024)
    net = connected(pair(config))
    _endless_message(net, chunks=2000, size=1024, ordered_gaps=True)
    recv = net.b.assoc._recv
    assert recv is not None
    assert recv.buffered <= 128 * 1024 + config.max_packet_size


# -- regressions: bugs found by these attacks -----------------------------------------------


def test_reset_requests_that_cannot_be_done_yet_are_bounded() -> None:
    # Bug: every Outgoing SSN Reset Request naming a last TSN not yet received was kept
    # ("deferred") with its whole stream list, without limit: one per packet, thousands
    # of stream ids each. Now a few are kept; the rest are answered "request already
    # in progress".
    net = connected(pair())
    b = net.b.assoc
    recv, reconf = b._recv, b._reconf
    assert recv is not None and reconf is not None
    seq = reconf._peer_seq
    results = []
    for i in range(200):
        request = OutgoingSSNResetRequest(
            (seq + i) & 0xFFFFFFFF, 0, (recv.cum + 1000 + i) & 0xFFFFFFFF, (0, 1, 2) * 1000
        )
        for d in to_server(net, b.verification_tag, ReconfigChunk((request,))):
            for c in Packet.parse(d).chunks:
                if isinstance(c, ReconfigChunk):
                    results += [p.result for p in c.params if isinstance(p, ReconfigResponse)]
    assert len(recv._deferred) == MAX_DEFERRED_RESETS
    assert all(len(streams) <= 3 for _, streams in recv._deferred)  # repeats dropped
    assert results[:MAX_DEFERRED_RESETS] == [ReconfigResult.IN_PROGRESS] * MAX_DEFERRED_RESETS
    assert set(results[MAX_DEFERRED_RESETS:]) == {ReconfigResult.ERROR_REQUEST_ALREADY_IN_PROGRESS}
    assert b.established
    still_works(net)


def test_a_reconfig_chunk_with_thousands_of_requests_does_not_crash() -> None:
    # Bug: 8000 Incoming SSN Reset Requests (8 bytes each) in one RE-CONFIG chunk made
    # an answer of 8000 * 12 bytes: struct.error out of receive_datagram. RFC 6525
    # allows two parameters per RE-CONFIG chunk; we act on the first two.
    net = connected(pair())
    b = net.b.assoc
    assert b._reconf is not None
    seq = b._reconf._peer_seq
    requests = tuple(IncomingSSNResetRequest((seq + k) & 0xFFFFFFFF) for k in range(8000))
    out = to_server(net, b.verification_tag, ReconfigChunk(requests))
    answers = [
        p
        for d in out
        for c in Packet.parse(d).chunks
        if isinstance(c, ReconfigChunk)
        for p in c.params
    ]
    assert len(answers) == 2
    assert b.established
    still_works(net)


def test_many_unknown_chunks_draw_one_report() -> None:
    # Bug: each 4-byte unknown chunk of type 11xxxxxx drew its own 12-byte ERROR chunk:
    # 8 KB in, 24 KB and 22 packets out. Now one report per packet.
    net = connected(pair())
    b = net.b.assoc
    chunks = [UnknownChunk(0xC1 + i % 60, 0, b"") for i in range(2000)]
    out = to_server(net, b.verification_tag, *chunks, HeartbeatChunk(b"after"))
    reports = [
        cause
        for d in out
        for c in Packet.parse(d).chunks
        if isinstance(c, ErrorChunk)
        for cause in c.causes
        if isinstance(cause, UnrecognizedChunkType)
    ]
    assert len(reports) == 1
    assert sum(len(d) for d in out) < 200
    assert any(  # processing went on to the HEARTBEAT (type 11: skip and continue)
        type(c).__name__ == "HeartbeatAckChunk" for d in out for c in Packet.parse(d).chunks
    )


def test_an_unknown_chunk_too_big_to_wrap_is_not_reported() -> None:
    # Bug: a 65535-byte unknown chunk wrapped in an Unrecognized Chunk Type cause is
    # longer than a TLV length can say: struct.error.
    net = connected(pair())
    b = net.b.assoc
    big = UnknownChunk(0xFF, 0, b"\0" * (65535 - 4))
    out = to_server(net, b.verification_tag, big)
    assert not any(isinstance(c, ErrorChunk) for d in out for c in Packet.parse(d).chunks)
    assert b.established


@pytest.mark.parametrize("listening", ["endpoint", "association"])
def test_an_init_full_of_unknown_parameters_does_not_crash_or_amplify(listening: str) -> None:
    # Bug: each unknown parameter of type 11xxxxxxxxxxxxxx is reflected in the INIT ACK
    # (4 bytes bigger each): 16000 of them made a chunk longer than 64 KB (struct.error)
    # and, below that, an answer twice the size of the INIT. Now at most 1 KB reflected.
    params = tuple(UnknownParam(0xC001, b"") for _ in range(16000))
    init = bytes(Packet(CLIENT_PORT, SERVER_PORT, 0, [InitChunk(9, 1500, 10, 10, 1, params)]))
    if listening == "endpoint":
        server = _server()
        server.receive_datagram(init, ("192.0.2.1", 5000), 0.0)
        out = [d for d, _ in server.datagrams_to_send(0.0)]
    else:
        assoc = Association(SCTPConfig(), local_port=SERVER_PORT, remote_port=CLIENT_PORT)
        assoc.receive_datagram(init, 0.0)
        out = assoc.datagrams_to_send(0.0)
    (answer,) = out
    assert isinstance(Packet.parse(answer).chunks[0], InitAckChunk)
    assert len(answer) < 1400


def test_an_init_ack_full_of_unknown_parameters_does_not_crash_the_client() -> None:
    # The same on the initiator's side: the report goes in an ERROR after the COOKIE ECHO.
    client = Association(fast_config(), local_port=CLIENT_PORT, remote_port=SERVER_PORT)
    client.connect(0.0)
    (init_bytes,) = client.datagrams_to_send(0.0)
    init = Packet.parse(init_bytes).chunks[0]
    assert isinstance(init, InitChunk)
    params = (StateCookieParam(b"c" * 40), *(UnknownParam(0xC001, b"") for _ in range(16000)))
    ack = InitAckChunk(5, 1500, 10, 10, 1, params)
    client.receive_datagram(bytes(Packet(SERVER_PORT, CLIENT_PORT, init.initiate_tag, [ack])), 0.1)
    (echo,) = client.datagrams_to_send(0.1)
    assert len(echo) < 1400
    assert client.state is State.COOKIE_ECHOED


def test_a_huge_sack_from_the_peer_costs_little() -> None:
    # 16000 gap blocks and duplicates in one SACK: processed, bounded, no abort.
    net = connected(pair())
    a = net.a.assoc
    for i in range(20):
        a.send(bytes([i]) * 500, stream=0)
    net.a.outgoing(net.now)  # in flight, the server never sees them
    assert a._send is not None
    cum = (a._send.cum_ack) & 0xFFFFFFFF
    gaps = tuple((i, i) for i in range(2, 16002, 2))
    sack = SackChunk(cum, 2**32 - 1, gaps[:8000], tuple(range(8000)))
    net.a.receive(bytes(Packet(SERVER_PORT, CLIENT_PORT, a.verification_tag, [sack])), net.now)
    net.a.outgoing(net.now)
    assert a.established and a._send is not None
    assert a._send._acked_count <= 20  # only chunks we sent can be marked
    still_works(net)


def test_tiny_messages_that_wait_are_charged_their_real_cost() -> None:
    # Bug: the window counted user bytes only, so one-byte ordered messages waiting for
    # a missing SSN (SSN 0 never sent) held 80 MB behind a 1 MB window (10 streams of
    # 32767 waiting messages). Each buffered message now counts at least MIN_CHARGE.
    net = connected(pair(fast_config(receive_buffer=64 * 1024, max_message_size=4096)))
    b = net.b.assoc
    recv = b._recv
    assert recv is not None
    tsn = recv.cum + 1
    gc.collect()
    tracemalloc.start()
    try:
        for stream in range(3):
            for ssn in range(1, 2000, 50):
                chunks: list[Chunk] = [
                    DataChunk((tsn + k) & 0xFFFFFFFF, stream, (ssn + k) & 0xFFFF, 0, b"x")
                    for k in range(50)
                ]
                tsn += 50
                to_server(net, b.verification_tag, *chunks)
        current, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert recv.buffered <= b.config.receive_buffer + b.config.max_packet_size
    assert current < 3 * b.config.receive_buffer + 64 * 1024  # was 6000 messages' worth
    assert b.established


def test_the_charge_of_delivered_messages_is_refunded_as_they_are_consumed() -> None:
    config = fast_config(auto_consume=False, receive_buffer=64 * 1024, max_message_size=4096)
    net = connected(pair(config))
    for i in range(100):
        net.a.assoc.send(bytes([i]) * (1 + i % 7), stream=i % 3)
    assert net.run_until(lambda: len(net.b.messages()) == 100)
    recv = net.b.assoc._recv
    assert recv is not None
    assert recv.unconsumed == 100 * MIN_CHARGE
    got = net.b.messages()
    net.b.assoc.consumed(sum(len(m) for m in got[:40]))
    assert recv.unconsumed == 60 * MIN_CHARGE
    for m in got[40:]:
        net.b.assoc.consumed(len(m))
    assert recv.unconsumed == 0 and recv.a_rwnd == 64 * 1024
