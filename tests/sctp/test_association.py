"""Two associations back to back over a simulated network (no real time passes)."""

from __future__ import annotations

import itertools
import random

import pytest

from trio_sctls.sctp import (
    Association,
    AssociationAborted,
    AssociationLost,
    AssociationUp,
    LocalProtocolError,
    MessageReceived,
    SCTPConfig,
    ShutdownComplete,
    ShutdownReceived,
    State,
    StreamResetDone,
)
from trio_sctls.sctp._causes import OutOfResource, UserInitiatedAbort
from trio_sctls.sctp._chunks import (
    CookieEchoChunk,
    HeartbeatAckChunk,
    HeartbeatChunk,
    InitChunk,
    SackChunk,
)
from trio_sctls.sctp._params import CookiePreservative

from .harness import (
    Net,
    chunks_of,
    connected,
    data_chunks,
    fast_config,
    lose_first_data,
    pair,
    tap,
)


def test_handshake_negotiates_the_smaller_stream_counts() -> None:
    net = connected(
        pair(
            fast_config(outbound_streams=10, max_inbound_streams=5),
            fast_config(outbound_streams=3, max_inbound_streams=8),
        )
    )
    assert net.a.of_type(AssociationUp) == [AssociationUp(8, 3, True)]
    assert net.b.of_type(AssociationUp) == [AssociationUp(3, 8, True)]
    assert net.a.assoc.verification_tag != net.b.assoc.verification_tag


def test_messages_flow_on_several_streams_both_ways() -> None:
    net = connected(pair())
    a, b = net.a.assoc, net.b.assoc
    for i in range(20):
        a.send(f"a{i}".encode(), stream=i % 4, ppid=46)
        b.send(f"b{i}".encode(), stream=i % 3)
    assert net.run_until(lambda: len(net.b.messages()) == 20 and len(net.a.messages()) == 20)
    for s in range(4):
        assert net.b.messages(s) == [f"a{i}".encode() for i in range(s, 20, 4)]
    for s in range(3):
        assert net.a.messages(s) == [f"b{i}".encode() for i in range(s, 20, 3)]
    ppids = {e.ppid for e in net.b.events if isinstance(e, MessageReceived)}
    assert ppids == {46}
    assert net.run_until(lambda: a.queued_bytes == 0 and b.queued_bytes == 0, 1)


@pytest.mark.parametrize("size", [100 * 1024, 18437])
@pytest.mark.parametrize("mtu", [1200, 65000])
def test_large_messages_are_fragmented_and_reassembled(size: int, mtu: int) -> None:
    net = connected(pair(fast_config(mtu=mtu)))
    payload = random.Random(size).randbytes(size)
    net.a.assoc.send(payload, stream=2)
    net.a.assoc.send(b"after", stream=2)
    assert net.run_until(lambda: len(net.b.messages()) == 2)
    assert net.b.messages() == [payload, b"after"]


def test_fragments_respect_the_mtu_with_the_udp_header_subtracted() -> None:
    sizes: list[int] = []
    net = connected(pair(fast_config(mtu=1200, ip_header_size=20)))
    net.hook = tap(lambda i, d, now: sizes.append(len(d)))
    net.a.assoc.send(bytes(50_000))
    assert net.run_until(lambda: len(net.b.messages()) == 1)
    assert max(sizes) <= 1200 - 20 - 8
    assert max(sizes) > 1100  # and the packets are actually full


def test_unordered_message_overtakes_a_lost_ordered_one() -> None:
    net = connected(pair())
    net.hook = lose_first_data()
    a = net.a.assoc
    a.send(b"ordered-1", stream=0)
    net.pump()
    a.send(b"ordered-2", stream=0)
    a.send(b"unordered", stream=0, unordered=True)
    assert net.run_until(lambda: len(net.b.messages()) == 3)
    received = [e for e in net.b.events if isinstance(e, MessageReceived)]
    assert received[0] == MessageReceived(0, 0, b"unordered", True)
    assert [e.data for e in received[1:]] == [b"ordered-1", b"ordered-2"]


def test_a_loss_on_one_stream_does_not_delay_another() -> None:
    net = connected(pair())
    dropped: list[float] = []

    def lose_stream_a_once(i: int, d: bytes, now: float) -> list[bytes]:
        if i == 0 and any(c.stream_id == 1 for c in data_chunks(d)) and not dropped:
            dropped.append(now)
            return []
        return [d]

    net.hook = lose_stream_a_once
    a = net.a.assoc
    a.send(b"A" * 100, stream=1)
    net.pump()
    a.send(b"B" * 100, stream=2)
    arrival: dict[int, float] = {}

    def both() -> bool:
        for e in net.b.events:
            if isinstance(e, MessageReceived):
                arrival.setdefault(e.stream, net.now)
        return len(arrival) == 2

    assert net.run_until(both)
    assert arrival[2] - dropped[0] < 0.05  # one link delay, no waiting for stream 1
    assert arrival[1] > arrival[2]


def test_retransmission_after_loss_backs_off_the_rto() -> None:
    net = connected(pair(fast_config(rto_initial=1.0, rto_min=1.0)))
    a = net.a.assoc
    blackout = [True]
    transmissions: list[float] = []

    def black_hole(i: int, d: bytes, now: float) -> list[bytes]:
        if i == 0 and data_chunks(d):
            transmissions.append(now)
            if blackout[0]:
                return []
        return [d]

    net.hook = black_hole
    a.send(b"persistent")
    net.run_for(8)  # transmissions at about 0, 1, 3, 7: RTO 1, 2, 4, 8
    gaps = [round(t2 - t1, 1) for t1, t2 in itertools.pairwise(transmissions)]
    assert gaps == [1.0, 2.0, 4.0]
    assert a.rto == 8.0
    assert a.cwnd == a.config.max_packet_size  # collapsed to one MTU (Section 7.2.3)
    blackout[0] = False
    assert net.run_until(lambda: net.b.messages() == [b"persistent"], 20)
    assert a.state is State.ESTABLISHED


def test_fast_retransmit_after_three_miss_indications() -> None:
    net = connected(pair(fast_config(rto_initial=3.0, rto_min=3.0)))
    a = net.a.assoc
    lost: list[int] = []
    retransmitted_at: list[float] = []

    def lose_one(i: int, d: bytes, now: float) -> list[bytes]:
        tsns = [c.tsn for c in data_chunks(d)] if i == 0 else []
        if tsns and not lost:
            lost.extend(tsns)
            return []
        if lost and lost[0] in tsns:
            retransmitted_at.append(now)
        return [d]

    net.hook = lose_one
    cwnd_before = a.cwnd
    for _ in range(8):
        a.send(bytes(1000))
    assert net.run_until(lambda: len(net.b.messages()) == 8, 10)
    assert retransmitted_at and retransmitted_at[0] < 1.0  # long before the 3 s RTO
    assert a.cwnd <= max(cwnd_before // 2, 4 * a.config.max_packet_size)


def test_zero_window_receiver_pushes_back_and_probing_resumes() -> None:
    receiver = fast_config(receive_buffer=8000, max_message_size=8000, auto_consume=False)
    net = connected(pair(fast_config(), receiver))
    a, b = net.a.assoc, net.b.assoc
    for _ in range(20):
        a.send(bytes(1000))
    net.run_for(5)
    got = len(net.b.messages())
    assert 0 < got <= 9  # at most a window's worth (plus the probe slack)
    assert a.peer_rwnd == 0 and a.queued_bytes >= 11_000
    assert a.state is State.ESTABLISHED  # probes do not count as errors
    sent_while_closed = net.sent[0]
    net.run_for(5)
    assert 0 < net.sent[0] - sent_while_closed < 20  # a few probes, no flood
    delivered = 0
    while delivered < 20:
        msgs = net.b.messages()
        b.consumed(sum(len(m) for m in msgs[delivered:]))
        delivered = len(msgs)
        net.run_for(1)
        assert net.now < 200
    assert len(net.b.messages()) == 20
    assert a.queued_bytes == 0


def test_shutdown_from_the_client() -> None:
    net = connected(pair())
    net.a.assoc.send(b"last words")
    net.a.assoc.shutdown(net.now)
    assert net.run_until(lambda: net.a.assoc.closed and net.b.assoc.closed)
    assert net.b.messages() == [b"last words"]
    assert net.a.events[-1] == ShutdownComplete()
    assert net.b.events[-2:] == [ShutdownReceived(), ShutdownComplete()]


def test_shutdown_from_the_server() -> None:
    net = connected(pair())
    net.a.assoc.send(b"to server")
    net.b.assoc.send(b"to client")
    net.b.assoc.shutdown(net.now)
    with pytest.raises(LocalProtocolError):
        net.b.assoc.send(b"too late")
    assert net.run_until(lambda: net.a.assoc.closed and net.b.assoc.closed)
    assert net.a.messages() == [b"to client"] and net.b.messages() == [b"to server"]
    assert ShutdownReceived() in net.a.events and net.a.events[-1] == ShutdownComplete()


def test_simultaneous_shutdown() -> None:
    net = connected(pair())
    net.a.assoc.shutdown(net.now)
    net.b.assoc.shutdown(net.now)
    assert net.run_until(lambda: net.a.assoc.closed and net.b.assoc.closed)
    assert net.a.events[-1] == ShutdownComplete() and net.b.events[-1] == ShutdownComplete()


def test_shutdown_waits_for_data_still_in_flight_over_a_lossy_link() -> None:
    net = connected(pair(seed=3, loss=0.1))
    payload = random.Random(1).randbytes(100 * 1024)
    net.a.assoc.send(payload, stream=1)
    net.a.assoc.send(b"tail", stream=3)
    net.a.assoc.shutdown(net.now)
    assert net.a.assoc.state is State.SHUTDOWN_PENDING
    assert net.run_until(lambda: net.a.assoc.closed and net.b.assoc.closed, 120)
    assert net.b.messages(1) == [payload] and net.b.messages(3) == [b"tail"]
    assert net.a.events[-1] == ShutdownComplete()


def test_init_collision_ends_in_one_association() -> None:
    config = fast_config()
    a = Association(config, local_port=7000, remote_port=7001, rng=random.Random(1))
    b = Association(config, local_port=7001, remote_port=7000, rng=random.Random(2))
    from .harness import Node

    net = Net(Node(a), Node(b))
    a.connect(0.0)
    b.connect(0.0)
    assert net.run_until(lambda: a.established and b.established, 30)
    assert len(net.a.of_type(AssociationUp)) == 1 and len(net.b.of_type(AssociationUp)) == 1
    a.send(b"ping")
    b.send(b"pong")
    assert net.run_until(lambda: net.b.messages() == [b"ping"] and net.a.messages() == [b"pong"])


def test_duplicated_packets_give_one_association_and_no_duplicate_messages() -> None:
    net = pair(duplicate=1.0)
    connected(net)
    assert len(net.a.of_type(AssociationUp)) == 1 and len(net.b.of_type(AssociationUp)) == 1
    for i in range(10):
        net.a.assoc.send(bytes([i]) * 3000)
    assert net.run_until(lambda: len(net.b.messages()) == 10)
    net.run_for(2)
    assert net.b.messages() == [bytes([i]) * 3000 for i in range(10)]


def test_stale_cookie_makes_the_client_retry_with_a_cookie_preservative() -> None:
    net = pair(fast_config(), fast_config(cookie_lifetime=0.5))
    held: list[bytes] = []
    inits: list[InitChunk] = []

    def delay_first_cookie(i: int, d: bytes, now: float) -> list[bytes]:
        chunks = chunks_of(d)
        inits.extend(c for c in chunks if isinstance(c, InitChunk))
        if i == 0 and isinstance(chunks[0], CookieEchoChunk) and now < 0.7:
            held.append(d)  # every COOKIE ECHO of the first 0.7 s is lost: stale by then
            return []
        return [d]

    net.hook = delay_first_cookie
    net.a.assoc.connect(net.now)
    assert net.run_until(lambda: net.a.assoc.established, 30)
    assert len(inits) >= 2
    assert any(isinstance(p, CookiePreservative) for p in inits[-1].params)


def test_abort_carries_the_reason() -> None:
    net = connected(pair())
    net.a.assoc.send(b"never mind")
    net.a.assoc.abort("shutting the shop")
    assert net.run_until(lambda: net.b.assoc.closed)
    (event,) = net.b.of_type(AssociationAborted)
    assert isinstance(event, AssociationAborted)
    assert event.by_peer and event.reason == "shutting the shop"
    assert event.causes == (UserInitiatedAbort(b"shutting the shop"),)
    assert net.a.of_type(AssociationAborted) == [
        AssociationAborted("shutting the shop", False, (UserInitiatedAbort(b"shutting the shop"),))
    ]
    with pytest.raises(LocalProtocolError):
        net.a.assoc.send(b"x")


def test_heartbeats_keep_an_idle_association_measured() -> None:
    net = connected(pair(fast_config(heartbeat_interval=1.0)))
    seen: list[type] = []
    net.hook = tap(lambda i, d, now: seen.extend(type(c) for c in chunks_of(d)))
    net.run_for(10)
    assert seen.count(HeartbeatChunk) >= 6 and seen.count(HeartbeatAckChunk) >= 6
    assert net.a.assoc.established and net.b.assoc.established


def test_silent_peer_is_lost_after_heartbeats_go_unanswered() -> None:
    net = connected(pair(fast_config(heartbeat_interval=1.0, rto_max=2.0)))
    net.hook = lambda i, d, now: [d] if i == 0 else []  # b's answers vanish
    assert net.run_until(lambda: net.a.assoc.closed, 200)
    (lost,) = net.a.of_type(AssociationLost)
    assert "HEARTBEAT" in lost.reason  # type: ignore[attr-defined]


def test_association_fails_after_max_retransmissions() -> None:
    net = connected(pair(fast_config(rto_max=1.0)))
    net.hook = lambda i, d, now: [d] if i == 1 else []  # a's packets vanish
    start = net.now
    rto = net.a.assoc.rto
    net.a.assoc.send(b"into the void")
    assert net.run_until(lambda: net.a.assoc.closed, 100)
    (lost,) = net.a.of_type(AssociationLost)
    assert "T3-rtx" in lost.reason  # type: ignore[attr-defined]
    # 11 timeouts (the 11th exceeds Association.Max.Retrans = 10), each twice as long as
    # the one before, up to RTO.Max.
    expected = sum(min(rto * 2**k, 1.0) for k in range(11))
    assert net.now - start == pytest.approx(expected, abs=0.05)
    assert net.a.assoc.queued_bytes == 0


def test_unanswered_init_gives_up_after_max_init_retransmits() -> None:
    net = pair(fast_config(rto_max=1.0))
    net.hook = lambda i, d, now: []
    net.a.assoc.connect(net.now)
    assert net.run_until(lambda: net.a.assoc.closed, 100)
    assert len(net.a.of_type(AssociationLost)) == 1
    assert net.sent[0] == 9  # the INIT and its 8 retransmissions


def test_stream_reset_restarts_sequence_numbers_after_queued_data() -> None:
    net = connected(pair())
    a = net.a.assoc
    ssns: dict[int, tuple[int, int]] = {}  # TSN -> (stream, SSN), retransmissions once
    net.hook = tap(
        lambda i, d, now: ssns.update(
            {c.tsn: (c.stream_id, c.ssn) for c in data_chunks(d) if i == 0}
        )
    )
    for i in range(5):
        a.send(f"before{i}".encode(), stream=1)
    a.reset_streams([1], net.now)
    for i in range(3):
        a.send(f"after{i}".encode(), stream=1)
    a.send(b"other", stream=2)
    assert net.run_until(lambda: len(net.b.messages()) == 9)
    assert net.b.messages(1) == [f"before{i}".encode() for i in range(5)] + [
        f"after{i}".encode() for i in range(3)
    ]
    assert StreamResetDone((1,), outgoing=True) in net.a.events
    assert StreamResetDone((1,), outgoing=False) in net.b.events
    assert [ssn for s, ssn in ssns.values() if s == 1] == [0, 1, 2, 3, 4, 0, 1, 2]


def test_stream_reset_is_deferred_while_data_is_missing() -> None:
    net = connected(pair())
    a = net.a.assoc
    net.hook = lose_first_data()
    a.send(b"first", stream=0)
    net.pump()
    a.reset_streams([0], net.now)
    a.send(b"second", stream=0)
    assert net.run_until(lambda: len(net.b.messages()) == 2, 30)
    assert net.b.messages() == [b"first", b"second"]
    assert StreamResetDone((0,), outgoing=True) in net.a.events


@pytest.mark.parametrize("side", ["ours", "the peer's"])
def test_a_shutdown_while_a_stream_reset_is_unanswered_completes_once_it_is_answered(
    side: str,
) -> None:
    # The reset holds the stream (RFC 6525 section 5.1.2) until the peer's response; the
    # SHUTDOWN (ours, or our SHUTDOWN ACK to the peer's) must go out as soon as the
    # response releases it, not wait for a SACK that will never come.
    net = connected(pair())
    a, b = net.a.assoc, net.b.assoc
    a.send(b"before the reset", stream=0)
    assert net.run_until(lambda: len(net.b.messages()) == 1)
    a.reset_streams([0], net.now)
    (a if side == "ours" else b).shutdown(net.now)  # before the response is back
    assert net.run_until(lambda: a.closed and b.closed, 5)
    assert net.a.events[-1] == ShutdownComplete() and net.b.events[-1] == ShutdownComplete()


def test_stream_reset_needs_peer_support() -> None:
    net = connected(pair(fast_config(), fast_config(reconfig=False)))
    assert net.a.of_type(AssociationUp) == [AssociationUp(10, 10, False)]
    with pytest.raises(LocalProtocolError):
        net.a.assoc.reset_streams([0], net.now)


def test_peer_sending_a_message_above_our_maximum_is_aborted() -> None:
    net = connected(pair(fast_config(), fast_config(max_message_size=20_000)))
    net.a.assoc.send(bytes(30_000))
    assert net.run_until(lambda: net.a.assoc.closed and net.b.assoc.closed)
    (theirs,) = net.a.of_type(AssociationAborted)
    assert isinstance(theirs, AssociationAborted) and theirs.by_peer
    assert theirs.causes == (OutOfResource(),)


def test_tsn_and_ssn_wrap_around() -> None:
    class NearWrap(random.Random):
        def getrandbits(self, k: int) -> int:
            return (1 << k) - 3 if k == 32 else super().getrandbits(k)

    config = fast_config()
    a = Association(config, local_port=1, remote_port=2, rng=NearWrap(1))
    b = Association(config, local_port=2, remote_port=1, rng=NearWrap(2))
    from .harness import Node

    net = connected(Net(Node(a), Node(b)))
    for i in range(70_000 // 1000):
        a.send(bytes([i % 256]) * 1000, stream=0)
    assert net.run_until(lambda: len(net.b.messages()) == 70, 60)
    assert net.b.messages() == [bytes([i % 256]) * 1000 for i in range(70)]


def test_send_refuses_what_sctp_cannot_carry() -> None:
    net = connected(pair(fast_config(outbound_streams=2, max_message_size=1000)))
    a = net.a.assoc
    with pytest.raises(LocalProtocolError):
        a.send(b"x", stream=2)
    with pytest.raises(LocalProtocolError):
        a.send(b"")
    with pytest.raises(LocalProtocolError):
        a.send(bytes(1001))
    fresh = Association(fast_config())
    with pytest.raises(LocalProtocolError):
        fresh.send(b"not up")


def test_packets_with_a_wrong_verification_tag_are_ignored() -> None:
    net = connected(pair())
    from trio_sctls.sctp import Packet

    bogus = Packet(5000, 9899, net.b.assoc.verification_tag ^ 1, [SackChunk(0, 0)])
    net.inject(1, bytes(bogus))
    abort = Packet(5000, 9899, 12345, [chunks_of(bytes(Packet(0, 0, 0, [])))] if False else [])
    del abort
    net.run_for(1)
    assert net.b.assoc.established
    net.a.assoc.send(b"still fine")
    assert net.run_until(lambda: net.b.messages() == [b"still fine"])


def test_config_rejects_nonsense() -> None:
    with pytest.raises(LocalProtocolError):
        SCTPConfig(outbound_streams=0)
    with pytest.raises(LocalProtocolError):
        SCTPConfig(mtu=200)
    with pytest.raises(LocalProtocolError):
        SCTPConfig(rto_min=2.0, rto_initial=1.0)
    with pytest.raises(LocalProtocolError):
        SCTPConfig(receive_buffer=10_000, max_message_size=20_000)
