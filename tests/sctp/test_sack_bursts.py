"""Acknowledgements per receive burst (RFC 9260, Section 6.2).

The core decides *that* a SACK is due while it processes packets (every second DATA
packet, a gap, a duplicate, a window update) and builds it only when the driver collects
what to send (``datagrams_to_send``). A driver that feeds a burst of packets and then
collects once (the udp pump: up to ``MAX_BURST`` datagrams per wake-up) therefore sends
one SACK for the burst, before it waits again; a driver that collects after every packet
sends one per second packet. These tests pin both, and that the SACK after a burst
carries what the immediate rules demand (gap blocks, duplicate TSNs).
"""

from __future__ import annotations

from trio_sctls.sctp import Association, MessageReceived, Packet
from trio_sctls.sctp._chunks import DataChunk, SackChunk

from .harness import connected, fast_config, pair

_M32 = 0xFFFFFFFF


def receiver() -> tuple[Association, int, float]:
    """An established server association whose DATA we forge (the client stays
    silent), its next expected TSN, and the time."""
    net = connected(pair(fast_config(auto_consume=False)))
    b = net.b.assoc
    assert b._recv is not None
    b.datagrams_to_send(net.now)
    return b, (b._recv.cum_wire + 1) & _M32, net.now


def data_packet(b: Association, tsn: int, ssn: int, size: int = 1000) -> bytes:
    chunk = DataChunk(tsn & _M32, 0, ssn & 0xFFFF, 0, b"x" * size)
    return bytes(Packet(5000, 9899, b.verification_tag, [chunk]))


def sacks(datagrams: list[bytes]) -> list[SackChunk]:
    return [c for d in datagrams for c in Packet.parse(d).chunks if isinstance(c, SackChunk)]


def test_collecting_after_every_packet_sacks_every_second_packet() -> None:
    b, tsn, now = receiver()
    found = []
    for n in range(16):
        b.receive_datagram(data_packet(b, tsn + n, n), now)
        found += sacks(b.datagrams_to_send(now))
    assert len(found) == 8
    assert found[-1].cumulative_tsn_ack == (tsn + 15) & _M32


def test_a_burst_collected_once_is_acknowledged_by_one_sack_for_all_of_it() -> None:
    b, tsn, now = receiver()
    for n in range(16):
        b.receive_datagram(data_packet(b, tsn + n, n), now)
    (sack,) = sacks(b.datagrams_to_send(now))
    assert sack.cumulative_tsn_ack == (tsn + 15) & _M32
    assert sack.gap_blocks == () and sack.duplicate_tsns == ()
    assert b._sack_deadline is None  # nothing left for the delayed-SACK timer


def test_a_gap_in_a_burst_is_reported_in_the_one_sack_at_its_end() -> None:
    b, tsn, now = receiver()
    for n in range(16):
        if n != 5:
            b.receive_datagram(data_packet(b, tsn + n, n), now)
    (sack,) = sacks(b.datagrams_to_send(now))
    assert sack.cumulative_tsn_ack == (tsn + 4) & _M32
    assert sack.gap_blocks == ((2, 11),)


def test_duplicates_in_a_burst_are_reported_in_the_one_sack_at_its_end() -> None:
    b, tsn, now = receiver()
    for n in (0, 1, 2, 1, 2, 3):
        b.receive_datagram(data_packet(b, tsn + n, n), now)
    (sack,) = sacks(b.datagrams_to_send(now))
    assert sack.cumulative_tsn_ack == (tsn + 3) & _M32
    assert sorted(sack.duplicate_tsns) == [(tsn + 1) & _M32, (tsn + 2) & _M32]


def test_window_updates_for_a_drained_batch_leave_in_one_sack() -> None:
    b, tsn, now = receiver()
    size = 60_000  # 16 of them close a quarter of the 1 MiB window and more
    for n in range(16):
        b.receive_datagram(data_packet(b, tsn + n, n, size), now)
    (closing,) = sacks(b.datagrams_to_send(now))
    while (event := b.next_event()) is not None:
        assert isinstance(event, MessageReceived)
        b.consumed(len(event.data))
    (update,) = sacks(b.datagrams_to_send(now))
    assert update.a_rwnd == b.config.receive_buffer > closing.a_rwnd
