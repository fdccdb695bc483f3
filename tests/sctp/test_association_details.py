"""Finer points of RFC 9260: SACK timing, RTO arithmetic, tag rules, bundling, restarts."""

from __future__ import annotations

import random

import pytest

from trio_sctls.sctp import (
    Association,
    AssociationAccepted,
    AssociationLost,
    AssociationUp,
    Endpoint,
    Packet,
    PeerError,
    SCTPConfig,
    State,
)
from trio_sctls.sctp._causes import InvalidStreamIdentifier, UnrecognizedParameters
from trio_sctls.sctp._chunks import (
    AbortChunk,
    CookieAckChunk,
    CookieEchoChunk,
    DataChunk,
    ErrorChunk,
    InitAckChunk,
    SackChunk,
    ShutdownChunk,
)
from trio_sctls.sctp._outbound import RTOEstimator
from trio_sctls.sctp._params import UnknownParam

from .harness import (
    Net,
    Node,
    chunks_of,
    connected,
    data_chunks,
    fast_config,
    lose_first_data,
    pair,
    tap,
)


def test_rto_follows_section_6_3_1() -> None:
    rto = RTOEstimator(SCTPConfig(rto_min=0.1, rto_initial=1.0, rto_max=60.0))
    assert rto.rto == 1.0  # C1: RTO.Initial before any measurement
    rto.sample(0.2)  # C2: SRTT = R, RTTVAR = R/2, RTO = SRTT + 4 RTTVAR
    assert (rto.srtt, rto.rttvar, rto.rto) == pytest.approx((0.2, 0.1, 0.6))
    rto.sample(0.4)  # C3: RTTVAR first (with the old SRTT), then SRTT
    assert rto.rttvar == pytest.approx(0.75 * 0.1 + 0.25 * 0.2)
    assert rto.srtt == pytest.approx(0.875 * 0.2 + 0.125 * 0.4)
    for _ in range(50):
        rto.sample(0.001)
    assert rto.rto == 0.1  # C6: never below RTO.Min
    for _ in range(20):
        rto.back_off()
    assert rto.rto == 60.0  # E2 / C7: never above RTO.Max


def test_retransmitted_chunks_give_no_rtt_sample() -> None:
    # Karn's rule: the RTT measured across a retransmission would be wrong.
    net = connected(pair(fast_config(rto_initial=1.0, rto_min=1.0)))
    a = net.a.assoc
    net.hook = lose_first_data()
    srtt_before = a._send.rto.srtt  # type: ignore[union-attr]
    a.send(b"once lost")
    assert net.run_until(lambda: net.b.messages() == [b"once lost"])
    net.run_for(1)
    assert a._send.rto.srtt == srtt_before  # type: ignore[union-attr]
    assert a.rto == 2.0  # backed off, and not reset by a measurement


def _record_sack_times(net: Net) -> list[float]:
    """Hook ``net`` to note when each SACK is sent; the list fills as the net runs."""
    sacks: list[float] = []
    net.hook = tap(
        lambda i, d, now: sacks.extend(now for c in chunks_of(d) if isinstance(c, SackChunk))
    )
    return sacks


def test_one_packet_is_acknowledged_after_the_delayed_sack_timer() -> None:
    net = connected(pair())
    sacks = _record_sack_times(net)
    start = net.now
    net.a.assoc.send(b"one")
    net.run_for(1)
    assert len(sacks) == 1
    assert sacks[0] - start == pytest.approx(0.01 + 0.2, abs=0.001)  # delay + 200 ms


def test_every_second_packet_is_acknowledged_at_once() -> None:
    net = connected(pair())
    sacks = _record_sack_times(net)
    start = net.now
    net.a.assoc.send(bytes(1000))
    net.a.assoc.send(bytes(1000))  # two full packets
    net.run_for(1)
    assert sacks and sacks[0] - start == pytest.approx(0.01, abs=0.001)


def test_duplicates_are_reported_in_the_next_sack() -> None:
    net = connected(pair())
    copies: list[bytes] = []

    def duplicate_data(i: int, d: bytes, now: float) -> list[bytes]:
        if i == 0 and data_chunks(d) and not copies:
            copies.append(d)
            return [d, d]
        return [d]

    reported: list[int] = []
    net.hook = duplicate_data
    net.a.assoc.send(b"twice")
    net.pump()
    net.hook = tap(
        lambda i, d, now: reported.extend(
            t for c in chunks_of(d) if isinstance(c, SackChunk) for t in c.duplicate_tsns
        )
    )
    net.run_for(1)
    assert reported == [data_chunks(copies[0])[0].tsn]
    assert net.b.messages() == [b"twice"]


def test_sack_rides_along_with_data() -> None:
    net = connected(pair())
    bundles: list[list[type]] = []
    net.hook = tap(lambda i, d, now: bundles.append([type(c) for c in chunks_of(d)]))
    net.a.assoc.send(b"question")
    net.run_until(lambda: bool(net.b.messages()))
    net.b.assoc.send(b"answer")
    net.run_for(1)
    assert [SackChunk, DataChunk] in bundles


def test_congestion_window_grows_in_slow_start() -> None:
    net = connected(pair())
    a = net.a.assoc
    initial = a.cwnd
    assert initial == min(4 * 1152, max(2 * 1152, 4380))  # Section 7.2.1
    for _ in range(100):
        a.send(bytes(1000))
    assert net.run_until(lambda: len(net.b.messages()) == 100)
    assert a.cwnd > 4 * initial


def test_lost_shutdown_is_retransmitted_by_t2() -> None:
    net = connected(pair())
    shutdowns: list[float] = []

    def lose_first_shutdown(i: int, d: bytes, now: float) -> list[bytes]:
        if any(isinstance(c, ShutdownChunk) for c in chunks_of(d)):
            shutdowns.append(now)
            if len(shutdowns) == 1:
                return []
        return [d]

    net.hook = lose_first_shutdown
    net.a.assoc.shutdown(net.now)
    assert net.run_until(lambda: net.a.assoc.closed and net.b.assoc.closed)
    assert len(shutdowns) == 2
    assert shutdowns[1] - shutdowns[0] == pytest.approx(net.a.assoc.rto / 2, rel=0.01)


def test_data_on_a_stream_that_does_not_exist_is_acked_and_reported() -> None:
    net = connected(pair(fast_config(), fast_config(max_inbound_streams=2)))
    b = net.b.assoc
    errors: list[object] = []

    def watch(i: int, d: bytes, now: float) -> list[bytes]:
        errors.extend(c for c in chunks_of(d) if isinstance(c, ErrorChunk))
        # We impersonate the client, so the real one must not see b's answers.
        return [d] if i == 0 else []

    net.hook = watch
    tsn = (b._recv.cum_wire + 1) & 0xFFFFFFFF  # type: ignore[union-attr]
    net.inject(1, bytes(Packet(5000, 9899, b.verification_tag, [DataChunk(tsn, 5, 0, 0, b"?")])))
    net.run_for(0.1)
    assert errors == [ErrorChunk((InvalidStreamIdentifier(5),))]
    assert b._recv.cum_wire == tsn  # type: ignore[union-attr]
    assert b.state is State.ESTABLISHED


def test_abort_tag_rules() -> None:
    net = connected(pair())
    b = net.b.assoc
    peer_tag = net.a.assoc.verification_tag
    # A reflected ABORT carrying b's own tag is not valid (Section 8.5.1 (B)).
    net.inject(1, bytes(Packet(5000, 9899, b.verification_tag, [AbortChunk(reflected=True)])))
    net.inject(1, bytes(Packet(5000, 9899, 12345, [AbortChunk()])))
    net.run_for(0.1)
    assert b.established
    # ... but one carrying the peer's tag with the T bit set is.
    net.inject(1, bytes(Packet(5000, 9899, peer_tag, [AbortChunk(reflected=True)])))
    net.run_for(0.1)
    assert b.closed


def test_cookie_ack_leads_its_packet() -> None:
    net = pair()
    first_chunks: list[list[type]] = []
    net.hook = tap(lambda i, d, now: first_chunks.append([type(c) for c in chunks_of(d)]))
    connected(net)
    assert [CookieAckChunk] in first_chunks


def test_unknown_init_ack_parameters_are_reported_after_the_cookie_echo() -> None:
    net = pair()

    echoes: list[list[object]] = []

    def add_unknown(i: int, d: bytes, now: float) -> list[bytes]:
        packet = Packet.parse(d)
        first = packet.chunks[0]
        if isinstance(first, InitAckChunk):
            first.params = (*first.params, UnknownParam(0xC0DE, b"new!"))
            return [bytes(packet)]
        if isinstance(first, CookieEchoChunk):
            echoes.append(list(packet.chunks))
        return [d]

    net.hook = add_unknown
    net.a.assoc.connect(net.now)
    assert net.run_until(lambda: net.a.assoc.established and net.b.assoc.established)
    (echo,) = echoes
    assert echo[1] == ErrorChunk((UnrecognizedParameters(bytes(UnknownParam(0xC0DE, b"new!"))),))
    assert isinstance(net.b.events[-1], PeerError)


def test_a_restarted_peer_replaces_its_old_association() -> None:
    config = fast_config()
    server = Endpoint(config, rng=random.Random(1))
    net = Net(Node(Association(config, local_port=5000, remote_port=9899)), Node(server))
    connected(net)
    old = net.b.assoc
    # The client host reboots: a new association from the same address and port.
    net.a = Node(Association(config, local_port=5000, remote_port=9899))
    net.a.assoc.connect(net.now)
    assert net.run_until(lambda: net.a.assoc.established and net.b.assoc is not old, 30)
    assert old.closed
    assert any(isinstance(e, AssociationLost) and "restart" in e.reason for e in net.b.events)
    assert net.b.events[-2:] == [AssociationAccepted(), AssociationUp(10, 10, True)]
    net.a.assoc.send(b"after the reboot")
    assert net.run_until(lambda: net.b.messages() == [b"after the reboot"])
