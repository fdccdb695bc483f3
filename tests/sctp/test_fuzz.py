"""Fuzzing: random and mutated packets never raise, and never hurt other associations."""

from __future__ import annotations

import contextlib
import random
import struct
from functools import lru_cache

from crc32c import crc32c
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trio_sctls.sctp import (
    Association,
    AssociationAborted,
    AssociationLost,
    Endpoint,
    Event,
    Packet,
    ParseError,
    SCTPConfig,
    ShutdownComplete,
    State,
)
from trio_sctls.sctp._chunks import (
    AbortChunk,
    Chunk,
    ErrorChunk,
    ForwardTsnChunk,
    InitChunk,
    ReconfigChunk,
    UnknownChunk,
    parse_chunks,
)
from trio_sctls.sctp._params import parse_params

from .harness import connected, fast_config, pair, tap
from .test_wire import CAUSES, PARAMS

FUZZ = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=True,
)


@lru_cache(maxsize=1)
def corpus() -> tuple[bytes, ...]:
    """Every datagram of a session that uses every feature: handshake, data, fragments,
    loss recovery, heartbeats, a stream reset, an unknown chunk, and a shutdown."""
    captured: list[bytes] = []
    net = pair(fast_config(heartbeat_interval=0.5, mtu=600), seed=5, loss=0.1)
    net.hook = tap(lambda i, d, now: captured.append(d))
    connected(net)
    a, b = net.a.assoc, net.b.assoc
    for i in range(6):
        a.send(bytes([i]) * (50 + 700 * i), stream=i % 3, unordered=i == 4)
        b.send(bytes([i]) * 30, stream=1)
    net.run_for(3)
    a.reset_streams([0, 1], net.now)
    net.run_for(1)
    a.shutdown(net.now)
    net.run_for(3)
    # Chunks a normal session does not show, with causes and parameters of every kind.
    crafted: list[Chunk] = [
        AbortChunk(tuple(CAUSES), reflected=True),
        ErrorChunk(tuple(CAUSES)),
        ReconfigChunk(tuple(p for p in PARAMS if p.code in range(13, 19))),
        InitChunk(7, 1500, 3, 3, 9, tuple(PARAMS)),
        ForwardTsnChunk(3, ((1, 2),)),
        UnknownChunk(0xFE, 1, b"unknown"),
    ]
    captured.extend(bytes(Packet(5000, 9899, 1, [c])) for c in crafted)
    return tuple(captured)


def with_crc(data: bytes) -> bytes:
    """``data`` with a correct CRC32c, so that the fuzz reaches the chunk parsers."""
    if len(data) < 12:
        return data
    buf = bytearray(data)
    buf[8:12] = b"\0\0\0\0"
    struct.pack_into("<I", buf, 8, crc32c(buf))
    return bytes(buf)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A captured packet with a few bytes changed, dropped or inserted."""
    base = bytearray(draw(st.sampled_from(corpus())))
    for op, pos, val in draw(
        st.lists(
            st.tuples(st.integers(0, 2), st.integers(0, 1 << 20), st.integers(0, 255)), max_size=6
        )
    ):
        if op == 0 and base:
            base[pos % len(base)] = val
        elif op == 1 and base:
            del base[pos % len(base)]
        else:
            base.insert(pos % (len(base) + 1), val)
    if draw(st.booleans()):
        base = base[: draw(st.integers(0, len(base)))]
    return with_crc(bytes(base)) if draw(st.booleans()) else bytes(base)


packets = st.one_of(st.binary(max_size=200).map(with_crc), st.binary(max_size=64), mutated())


@FUZZ
@given(st.binary(max_size=2000))
def test_parsers_raise_only_parse_error(data: bytes) -> None:
    for parse in (Packet.parse, parse_chunks, parse_params):
        with contextlib.suppress(ParseError):
            parse(data)


@FUZZ
@given(mutated())
def test_mutated_packets_raise_only_parse_error(data: bytes) -> None:
    try:
        packet = Packet.parse(data)
    except ParseError:
        return
    assert Packet.parse(bytes(packet)).chunks == packet.chunks  # re-serialisable


def _with_tag(data: bytes, tag: int) -> bytes:
    if len(data) < 12:
        return data
    return with_crc(data[:4] + struct.pack("!I", tag) + data[8:])


@FUZZ
@given(st.lists(st.tuples(packets, st.integers(0, 3), st.integers(0, 2**32 - 1)), max_size=8))
def test_garbage_never_hurts_an_endpoint_or_its_associations(
    attacks: list[tuple[bytes, int, int]],
) -> None:
    net = connected(pair(endpoint=True))
    endpoint = net.b.inner
    assert isinstance(endpoint, Endpoint)
    victim = net.b.assoc
    for data, who, tag in attacks:
        if who == 0:
            # From the victim's own address, with any tag but the victim's.
            wrong = tag if tag != victim.verification_tag else tag ^ 1
            endpoint.receive_datagram(_with_tag(data, wrong), net.b.peer_addr, net.now)
        else:
            endpoint.receive_datagram(data, ("attacker", who), net.now)
        endpoint.datagrams_to_send(net.now)
        net.run_for(0.05)
    assert victim.state is State.ESTABLISHED
    net.a.assoc.send(b"still there?", stream=1)
    victim.send(b"yes", stream=2)
    assert net.run_until(lambda: net.b.messages() == [b"still there?"] and bool(net.a.messages()))
    assert net.a.messages() == [b"yes"]


@FUZZ
@given(st.lists(packets, max_size=8), st.booleans())
def test_garbage_with_the_right_tag_leaves_a_coherent_association(
    attacks: list[bytes], server_side: bool
) -> None:
    net = connected(pair())
    node = net.b if server_side else net.a
    target = node.assoc
    for data in attacks:
        target.receive_datagram(_with_tag(data, target.verification_tag), net.now)
        net.run_for(0.05)
    net.run_for(5)
    # Forged packets with the right tag can legitimately abort or shut it down (SCTP
    # without SCTP-AUTH cannot tell); whatever happened, it is reported by an event.
    final = (AssociationAborted, AssociationLost, ShutdownComplete)
    if target.closed:
        assert any(isinstance(e, final) for e in node.events)
    assert all(isinstance(e, Event) for e in node.events)


@FUZZ
@given(st.lists(packets, max_size=10))
def test_a_listening_association_survives_garbage(attacks: list[bytes]) -> None:
    listener = Association(SCTPConfig(), local_port=9899, remote_port=5000, rng=random.Random(3))
    for data in attacks:
        listener.receive_datagram(data, 0.0)
        listener.datagrams_to_send(0.0)
    assert listener.closed
    assert listener.next_event() is None


def test_the_fuzz_corpus_covers_the_interesting_chunks() -> None:
    seen = {type(c).__name__ for d in corpus() for c in Packet.parse(d).chunks}
    expected = {
        "InitChunk",
        "InitAckChunk",
        "CookieEchoChunk",
        "CookieAckChunk",
        "DataChunk",
        "SackChunk",
        "HeartbeatChunk",
        "HeartbeatAckChunk",
        "ReconfigChunk",
        "ShutdownChunk",
        "ShutdownAckChunk",
        "ShutdownCompleteChunk",
    }
    assert expected <= seen
