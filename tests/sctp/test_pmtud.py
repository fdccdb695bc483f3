"""Path MTU discovery (RFC 8899 PLPMTUD) on the simulated network: the search, black
holes, and what probes must never do."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from trio_sctls.sctp import BASE_PLPMTU, Fragmentable, PMTUDState
from trio_sctls.sctp._chunks import CHUNK_TYPES, ErrorChunk, HeartbeatChunk, PadChunk
from trio_sctls.sctp._packet import packet_header
from trio_sctls.sctp._pmtud import MAX_PROBES, PMTU_RAISE_TIMER, PathMTU

from .harness import Net, chunks_of, connected, data_chunks, fast_config, pair, tap

#: IPv6 + UDP under each SCTP packet (the core's default ip_header_size of 40, + 8).
OVERHEAD = 48
#: The largest IP packet: what an interface of unknown MTU lets us try.
MAX_MTU = 65535


def _net(path_mtu: int | None, **config: object) -> Net:
    options: dict[str, object] = {"mtu": MAX_MTU}
    options.update(config)
    net = pair(fast_config(**options))
    net.path_mtu = path_mtu
    return _sending(connected(net))


def _sending(net: Net) -> Net:
    """Have each end send a message: probing waits for the first DATA."""
    for node in net.nodes:
        node.assoc.send(b"hello", stream=0)
    return net


def _settled(net: Net) -> bool:
    return all(n.assoc.pmtud_state is PMTUDState.SEARCH_COMPLETE for n in net.nodes)


def _is_probe(datagram: bytes) -> bool:
    return any(isinstance(c, PadChunk) for c in chunks_of(datagram))


def _transfer(net: Net, count: int, size: int, timeout: float = 120.0) -> list[bytes]:
    rng = random.Random(count)
    sent = [rng.randbytes(size) for _ in range(count)]
    before = len(net.b.messages(1))
    for payload in sent:
        net.a.assoc.send(payload, stream=1)
    assert net.run_until(lambda: len(net.b.messages(1)) >= before + count, timeout)
    return sent


@pytest.mark.parametrize(("path_mtu", "expected"), [(1500, 1500), (9000, 9000), (MAX_MTU, None)])
def test_the_search_settles_on_the_path_mtu_within_seconds(
    path_mtu: int, expected: int | None
) -> None:
    net = _net(path_mtu)
    a = net.a.assoc
    assert a.path_mtu == BASE_PLPMTU + OVERHEAD  # where it starts
    assert net.run_until(lambda: _settled(net), 30)
    assert net.now < 30
    for node in net.nodes:
        if expected is not None:
            assert node.assoc.path_mtu == expected
        else:  # as large as the path and an IP packet allow: loopback-sized
            assert MAX_MTU - 4 < node.assoc.path_mtu <= MAX_MTU
    sizes: list[int] = []
    net.hook = tap(lambda i, d, now: sizes.append(len(d)) if i == 0 and data_chunks(d) else None)
    sent = _transfer(net, 10, 150_000)
    assert net.b.messages(1) == sent
    # Data packets now fill the path: within a SACK and a fragment's rounding of it.
    assert a.path_mtu - 48 <= max(sizes) + OVERHEAD <= a.path_mtu


def test_probes_are_padded_heartbeats_of_exactly_the_size_probed() -> None:
    probes: list[bytes] = []
    net = pair(fast_config(mtu=9000))
    net.hook = tap(lambda i, d, now: probes.append(d) if _is_probe(d) else None)
    _sending(connected(net))
    assert net.run_until(lambda: _settled(net), 30)
    sizes = sorted({len(p) + OVERHEAD for p in probes})
    assert sizes == [BASE_PLPMTU + OVERHEAD, 9000]
    for probe in probes:
        chunks = chunks_of(probe)
        assert [type(c) for c in chunks] == [HeartbeatChunk, PadChunk]


def test_a_path_that_shrinks_mid_transfer_is_detected_and_nothing_is_lost() -> None:
    net = _net(9000)
    a = net.a.assoc
    assert net.run_until(lambda: _settled(net), 30)
    assert a.path_mtu == 9000
    rng = random.Random(7)
    sent = [rng.randbytes(20_000) for _ in range(100)]
    for payload in sent:
        a.send(payload, stream=1)
    assert net.run_until(lambda: len(net.b.messages(1)) >= 10, 30)
    net.path_mtu = 1500  # a black hole: big packets vanish, no ICMP
    cut_for_9000: set[int] = set()  # TSNs sent while the association used 9000
    fragmentable: set[int] = set()

    def watch(i: int, d: bytes, now: float) -> None:
        tsns = {c.tsn for c in data_chunks(d)} if i == 0 else set()
        if a.path_mtu == 9000:
            cut_for_9000.update(tsns)
        if isinstance(d, Fragmentable):
            fragmentable.update(tsns)

    net.hook = tap(watch)
    assert net.run_until(lambda: len(net.b.messages(1)) == len(sent), 120)
    # Only DATA sent before the black hole was found needed IP fragmentation: what had
    # not left yet was cut again for the smaller size.
    assert fragmentable and fragmentable <= cut_for_9000
    assert net.b.messages(1) == sent  # in order, once each
    assert net.too_big > 0
    assert net.run_until(lambda: a.pmtud_state is PMTUDState.SEARCH_COMPLETE, 60)
    assert a.path_mtu == 1500
    assert a.established and net.b.assoc.established
    more = _transfer(net, 5, 30_000)
    assert net.b.messages(1)[len(sent) :] == more


def test_probes_never_count_towards_association_failure() -> None:
    # Every probe above the base size is lost, over and over (the raise timer restarts
    # the search): with two retransmissions allowed, counting them would end it.
    net = _net(BASE_PLPMTU + OVERHEAD, max_retransmissions=2, heartbeat_interval=1.0)
    probes: list[int] = []
    net.hook = tap(lambda i, d, now: probes.append(len(d)) if _is_probe(d) else None)
    for _ in range(3):
        net.run_for(PMTU_RAISE_TIMER)
        net.a.assoc.send(b"still here", stream=2)
    net.run_for(5)
    assert net.a.assoc.established and net.b.assoc.established
    assert net.b.messages(2) == [b"still here"] * 3
    assert sum(size > BASE_PLPMTU for size in probes) >= 3 * 2 * MAX_PROBES
    assert net.a.assoc.path_mtu == BASE_PLPMTU + OVERHEAD


def test_a_peer_that_skips_pad_chunks_unknown_still_answers_probes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # As a peer without RFC 4820 does: type 0x84 is unknown, and its high bits (10)
    # say "skip it, go on, report nothing".
    monkeypatch.delitem(CHUNK_TYPES, PadChunk.CODE)
    errors: list[object] = []
    net = pair(fast_config(mtu=9000))
    net.hook = tap(
        lambda i, d, now: errors.extend(c for c in chunks_of(d) if isinstance(c, ErrorChunk))
    )
    _sending(connected(net))
    assert net.run_until(lambda: _settled(net), 30)
    assert net.a.assoc.path_mtu == 9000
    assert errors == []


def test_refused_probe_moves_the_search_on_at_once() -> None:
    # The interface cannot carry the probe (EMSGSIZE): no waiting for its timer.
    net = pair(fast_config(mtu=MAX_MTU))
    a = net.a.assoc
    refused: list[bytes] = []

    def interface(i: int, d: bytes, now: float) -> list[bytes]:
        if i == 0 and len(d) + OVERHEAD > 9000:
            refused.append(d)
            assert a.datagram_refused(d, now)
            return []
        return [d]

    net.hook = interface
    _sending(connected(net))
    assert net.run_until(lambda: a.pmtud_state is PMTUDState.SEARCH_COMPLETE, 5)
    assert a.path_mtu == 9000
    assert len(refused) == 1  # each size refused once is enough
    assert not a.datagram_refused(b"\0" * 12, net.now)  # not ours


def test_refused_packet_of_the_current_size_is_a_black_hole() -> None:
    net = _net(9000)
    a = net.a.assoc
    assert net.run_until(lambda: _settled(net), 30)
    packet = bytearray(a.max_packet_size)
    packet[:12] = packet_header(a.local_port, a.remote_port, net.b.assoc.verification_tag)
    assert a.datagram_refused(bytes(packet), net.now)
    assert a.pmtud_state is PMTUDState.BASE
    assert a.path_mtu == BASE_PLPMTU + OVERHEAD


def test_the_local_mtu_caps_the_search() -> None:
    net = pair(fast_config(mtu=MAX_MTU))
    connected(net)
    net.a.assoc.set_local_mtu(9000)
    _sending(net)
    assert net.run_until(lambda: _settled(net), 30)
    assert net.a.assoc.path_mtu == 9000
    assert net.b.assoc.path_mtu > 60_000


def test_a_grown_path_is_found_when_the_raise_timer_fires() -> None:
    net = _net(1500)
    assert net.run_until(lambda: _settled(net), 30)
    assert net.a.assoc.path_mtu == 1500
    net.path_mtu = 9000
    net.run_for(PMTU_RAISE_TIMER / 2)
    net.a.assoc.send(b"data since the search: worth searching again", stream=0)
    net.run_for(PMTU_RAISE_TIMER / 2 + 30)
    assert net.a.assoc.path_mtu == 9000
    assert net.a.assoc.pmtud_state is PMTUDState.SEARCH_COMPLETE


def test_without_discovery_the_configured_mtu_is_used_and_nothing_probed() -> None:
    probes: list[bytes] = []
    net = pair(fast_config(mtu=9000, pmtud=False))
    net.hook = tap(lambda i, d, now: probes.append(d) if _is_probe(d) else None)
    _sending(connected(net))
    net.run_for(10)
    assert net.a.assoc.path_mtu == 9000
    assert net.a.assoc.pmtud_state is PMTUDState.DISABLED
    assert probes == []


def test_an_association_that_sends_no_data_sends_no_probes() -> None:
    probes: list[bytes] = []
    net = pair(fast_config(mtu=9000, heartbeat_interval=30.0))
    net.hook = tap(lambda i, d, now: probes.append(d) if _is_probe(d) else None)
    connected(net)
    net.run_for(3 * PMTU_RAISE_TIMER)
    assert probes == []
    assert net.a.assoc.pmtud_state is PMTUDState.BASE
    _sending(net)
    assert net.run_until(lambda: _settled(net), 30)
    assert net.a.assoc.path_mtu == 9000


def test_a_path_below_the_base_size_ends_in_the_error_state_and_data_still_flows() -> None:
    # Even BASE_PLPMTU is too big: the state machine says ERROR, and the base size
    # stays in use (data cut for it goes out as IP fragments where the stack can).
    net = _net(1000)
    net.run_for(10)
    assert net.a.assoc.pmtud_state is PMTUDState.ERROR
    assert net.a.assoc.established


def test_state_machine_alone_walks_base_searching_complete() -> None:
    pm = PathMTU(9000 - 28, 28)
    assert pm.state is PMTUDState.DISABLED
    pm.start()
    assert (pm.state, pm.probed_size, pm.probe_due) == (PMTUDState.BASE, BASE_PLPMTU, False)
    pm.on_data_sent()
    assert pm.probe_due
    size, info = pm.take_probe(0.0, 0.5, b"12345678")
    assert pm.deadline == 1.0  # PROBE_TIMER is at least a second
    assert size == BASE_PLPMTU
    assert pm.on_probe_ack(info, 0.1) == 0.0
    assert (pm.state, pm.probed_size) == (PMTUDState.SEARCHING, 9000 - 28)
    for attempt in range(MAX_PROBES):
        pm.take_probe(1.0 + attempt, 0.5, b"abcdefgh")
        assert pm.on_probe_ack(info, 1.5) is None  # an old nonce confirms nothing
        pm.on_timer(pm.deadline or 0.0)
    assert pm.probed_size == 1500 - 28  # the next plateau down
    _size, info = pm.take_probe(10.0, 0.5, b"ABCDEFGH")
    pm.on_probe_ack(info, 10.1)
    assert (pm.state, pm.size, pm.path_mtu) == (PMTUDState.SEARCH_COMPLETE, 1472, 1500)
    assert pm.deadline == 10.1 + PMTU_RAISE_TIMER


def _icmp_router(net: Net, mtu: int) -> None:
    """A router before the path's bottleneck that answers our too-big datagrams with
    ICMP Packet Too Big (quoting their start), as a well-behaved one does; only ``a``
    is told (``b``'s direction has a router that says nothing)."""

    def hook(i: int, d: bytes, now: float) -> list[bytes]:
        if i == 0 and len(d) + OVERHEAD > mtu and not isinstance(d, Fragmentable):
            assert net.a.assoc.packet_too_big(d[:64], mtu, now)
        return [d]

    net.path_mtu = mtu
    net.hook = hook


def test_packet_too_big_ends_a_probe_at_once_and_its_size_is_probed_next() -> None:
    net = pair(fast_config(mtu=MAX_MTU))
    _icmp_router(net, 1450)  # not a plateau: only the ICMP hint finds it exactly
    _sending(connected(net))
    assert net.run_until(lambda: net.a.assoc.pmtud_state is PMTUDState.SEARCH_COMPLETE, 30)
    assert net.a.assoc.path_mtu == 1448  # 1450, in whole 4-byte words of SCTP packet
    assert net.now < 1  # no probe had to time out
    assert net.run_until(lambda: _settled(net), 30)
    assert net.b.assoc.path_mtu == 1400  # without ICMP: the largest plateau that fits


def test_packet_too_big_below_the_current_size_is_a_black_hole() -> None:
    net = _net(9000)
    a = net.a.assoc
    assert net.run_until(lambda: _settled(net), 30)
    _icmp_router(net, 1450)
    sent = _transfer(net, 20, 20_000)
    assert net.b.messages(1) == sent
    assert net.run_until(lambda: a.pmtud_state is PMTUDState.SEARCH_COMPLETE, 30)
    assert a.path_mtu == 1448


def test_packet_too_big_that_does_not_quote_the_peers_tag_is_ignored() -> None:
    net = _net(None)
    a = net.a.assoc
    assert net.run_until(lambda: _settled(net), 30)
    forged = packet_header(a.local_port, a.remote_port, a.verification_tag)  # ours, not theirs
    assert not a.packet_too_big(forged, 1280, net.now)
    assert not a.packet_too_big(forged[:6], 1280, net.now)
    genuine = packet_header(a.local_port, a.remote_port, net.b.assoc.verification_tag)
    assert a.packet_too_big(genuine, 1000, net.now)  # below the base: believed, unused
    assert a.pmtud_state is PMTUDState.SEARCH_COMPLETE
    assert a.path_mtu > 60_000


def test_a_closed_receive_window_is_not_taken_for_a_black_hole() -> None:
    # Zero window probes time out again and again while the peer does not read: that
    # is flow control, not a path that lost its large packets.
    reader = fast_config(mtu=9000, receive_buffer=20_000, max_message_size=20_000)
    net = pair(fast_config(mtu=9000), replace(reader, auto_consume=False))
    a = net.a.assoc
    connected(net)
    a.send(b"start the search", stream=0)
    assert net.run_until(lambda: a.pmtud_state is PMTUDState.SEARCH_COMPLETE, 30)
    for _ in range(10):
        a.send(bytes(8000), stream=1)
    net.run_for(120)
    assert a.peer_rwnd == 0 and a.queued_bytes > 0  # the window stayed shut
    assert (a.pmtud_state, a.path_mtu) == (PMTUDState.SEARCH_COMPLETE, 9000)
