"""The sending half of an association: fragmentation, retransmission, congestion control.

Sequence numbers are kept *unwrapped* internally: TSNs are plain Python ints that only
grow (the wire carries ``tsn & 0xFFFFFFFF``), so comparisons are ordinary ``<`` instead
of RFC 1982 serial arithmetic, and wrap-around is handled once, where a TSN arrives.

A message is fragmented and given its TSNs when ``send()`` queues it (RFC 9260,
Section 6.9), so the queue is one TSN-ordered line: ``_sent`` (transmitted at least once,
not yet cumulatively acknowledged; its TSNs are contiguous) followed by ``_pending``
(never transmitted). Assigning TSNs early also gives a stream reset its "last assigned
TSN" at once (RFC 6525, Section 5.1.2).

Section 7.2 congestion control, per the single path we have: ``cwnd``, ``ssthresh``,
``partial_bytes_acked``, fast retransmit on the third miss indication, fast recovery
until the cumulative ack passes the highest TSN outstanding when it began.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from ._causes import ProtocolViolationCause
from ._chunks import (
    _DATA_HEADER,
    FLAG_BEGIN,
    FLAG_END,
    FLAG_UNORDERED,
    SackChunk,
    data_chunk_bytes,
)
from ._config import SCTPConfig, fragment_size
from ._errors import ProtocolViolation
from ._tlv import PADDING

_M32 = 0xFFFFFFFF
_HALF32 = 1 << 31
#: Section 7.2.4: fast retransmit on the third miss indication.
FAST_RETRANSMIT_MISSES = 3
#: Chunk header size: counted as the on-wire cost of a queued DATA chunk.
DATA_HEADER = 16


class RTOEstimator:
    """Retransmission timeout from RTT samples (RFC 9260, Section 6.3.1)."""

    __slots__ = ("rto", "rto_max", "rto_min", "rttvar", "srtt")

    # Section 6.3.1 / 16: RTO.Alpha = 1/8, RTO.Beta = 1/4.
    ALPHA = 0.125
    BETA = 0.25
    #: Clock granularity G: our clock is a float, so only a floor for RTTVAR.
    GRANULARITY = 0.001

    def __init__(self, config: SCTPConfig) -> None:
        self.rto = config.rto_initial  # C1: RTO.Initial until the first measurement.
        self.rto_min = config.rto_min
        self.rto_max = config.rto_max
        self.srtt: float | None = None
        self.rttvar = 0.0

    def sample(self, r: float) -> None:
        """Feed one RTT measurement R (only from chunks sent once: Karn's rule)."""
        r = max(r, 0.0)
        if self.srtt is None:
            # C2: the first measurement.
            self.srtt = r
            self.rttvar = r / 2
        else:
            # C3: later measurements, RTTVAR first (it uses the old SRTT).
            self.rttvar = (1 - self.BETA) * self.rttvar + self.BETA * abs(self.srtt - r)
            self.srtt = (1 - self.ALPHA) * self.srtt + self.ALPHA * r
        self.rttvar = max(self.rttvar, self.GRANULARITY)
        # C6, C7: clamp to [RTO.Min, RTO.Max].
        self.rto = min(max(self.srtt + 4 * self.rttvar, self.rto_min), self.rto_max)

    def back_off(self) -> None:
        """Section 6.3.3, E2: double the RTO after a timeout, up to RTO.Max."""
        self.rto = min(self.rto * 2, self.rto_max)


class OutChunk:
    """One DATA chunk of ours, from queueing until the peer cumulatively acks it."""

    __slots__ = (
        "acked",
        "data",
        "fast_rtx_done",
        "flags",
        "in_flight",
        "key_id",
        "misses",
        "ppid",
        "rtx",
        "sent_at",
        "size",
        "ssn",
        "stream",
        "tsn",
        "tx_count",
        "wire_size",
    )

    def __init__(
        self,
        tsn: int,
        stream: int,
        ssn: int,
        ppid: int,
        flags: int,
        data: memoryview,
        key_id: int = 0,
    ) -> None:
        self.tsn = tsn
        self.stream = stream
        self.ssn = ssn
        self.ppid = ppid
        self.flags = flags
        self.data = data
        self.size = n = len(data)
        #: Bytes of the DATA chunk on the wire: header, user data, padding.
        self.wire_size = 16 + n + (-n & 3)
        self.sent_at = 0.0
        self.tx_count = 0
        self.acked = False  # reported in a Gap Ack Block of the latest SACK
        self.in_flight = False  # counted in the flight size
        self.rtx = False  # marked for retransmission
        self.fast_rtx_done = False  # Section 7.2.4: fast-retransmit a chunk only once
        self.misses = 0
        #: The SCTP-AUTH key active when the message was queued: every transmission
        #: of the chunk, retransmissions included, is signed with it (see
        #: :attr:`SendSide.key_id`).
        self.key_id = key_id

    def wire(self) -> bytes:
        """The DATA chunk's bytes."""
        return data_chunk_bytes(
            self.tsn & _M32, self.stream, self.ssn, self.ppid, self.flags, self.data
        )

    def write_to(self, packet: bytearray) -> None:
        """Append the DATA chunk's bytes (:meth:`wire`, :attr:`wire_size` of them) to
        the packet being assembled, copying the user data once, straight from the
        message."""
        n = self.size
        packet += _DATA_HEADER.pack(
            0, self.flags, 16 + n, self.tsn & _M32, self.stream, self.ssn, self.ppid
        )
        packet += self.data
        if n & 3:
            packet += PADDING[-n & 3]


@dataclass(slots=True)
class SackResult:
    """What a SACK changed, for the association's timers and counters."""

    new_data_acked: bool = False
    cum_advanced: bool = False
    all_acked: bool = False


@dataclass(slots=True)
class _Held:
    """Messages sent on a stream whose reset is in progress (RFC 6525, Section 5.1.2)."""

    #: (data, ppid, unordered, the SCTP-AUTH key it was sent under).
    messages: list[tuple[bytes, int, bool, int]] = field(default_factory=list)


class SendSide:
    """Our outgoing DATA: queue, transmission, acknowledgement, retransmission."""

    def __init__(
        self, config: SCTPConfig, initial_tsn: int, outbound_streams: int, peer_rwnd: int
    ) -> None:
        self._config = config
        self._pmtu = config.max_packet_size
        self._frag = config.max_fragment_size
        self.next_tsn = initial_tsn
        self.cum_ack = initial_tsn - 1
        self._ssn = [0] * outbound_streams
        self._pending: deque[OutChunk] = deque()
        self._sent: deque[OutChunk] = deque()
        self._held: dict[int, _Held] = {}
        self.queued_bytes = 0
        self.flight = 0
        self._rtx_count = 0
        self._acked_count = 0  # chunks in _sent marked acked by a Gap Ack Block
        self.peer_rwnd = peer_rwnd
        # Section 7.2.1: initial cwnd = min(4 * MTU, max(2 * MTU, 4380)), ssthresh = a_rwnd.
        self.cwnd = min(4 * self._pmtu, max(2 * self._pmtu, 4380))
        self.ssthresh = peer_rwnd
        self._partial_bytes_acked = 0
        self._fast_recovery_exit: int | None = None
        self._send_one_now = False  # T3 expiry / fast retransmit: one packet ignores cwnd
        self.rto = RTOEstimator(config)
        self._rtt_tsn: int | None = None
        self.t3_deadline: float | None = None
        self.probing = False  # zero window probing (Section 6.1, rule A)
        #: The SCTP-AUTH shared key identifier active now (RFC 4895), stamped on each
        #: chunk queued: a message is signed with the key that was active when the user
        #: sent it, never with one activated later. RFC 6083 (DTLS over SCTP) depends
        #: on it: the records that let the peer compute a new key must not travel (or
        #: be retransmitted) under that key.
        self.key_id = 0

    @property
    def packet_size(self) -> int:
        """The largest packet: what new messages are cut for, cwnd's unit (Section 7.2)."""
        return self._pmtu

    def set_packet_size(self, size: int) -> None:
        """Path MTU discovery (``_pmtud``) moved the packet size to ``size``: cut new
        messages for it, and move cwnd towards the initial window of the new size
        (Section 7.2.1 counts that window in MTUs, unknown when it was first set): up
        to it when the size grows, down to it when it shrinks."""
        window = min(4 * size, max(2 * size, 4380))
        if size > self._pmtu:
            self.cwnd = max(self.cwnd, window)
        else:
            self.cwnd = min(self.cwnd, window)
        self._pmtu = size
        self._frag = fragment_size(size)
        if any(ch.size > self._frag for ch in self._pending):
            self._recut_pending()

    def _recut_pending(self) -> None:
        """Cut never-sent DATA again for the smaller packet size, renumbering its TSNs
        (the peer has seen none of them), so that only what was already sent needs IP
        fragmentation (Section 6.9). Not while a stream reset holds messages back: its
        request named the last TSN assigned."""
        frag = self._frag
        if self._held:
            return
        pending = self._pending
        tsn = pending[0].tsn if pending else self.next_tsn
        recut: deque[OutChunk] = deque()
        for ch in pending:
            n = ch.size
            if n <= frag:
                ch.tsn = tsn
                tsn += 1
                recut.append(ch)
                continue
            middle = ch.flags & ~(FLAG_BEGIN | FLAG_END)
            for offset in range(0, n, frag):
                flags = middle
                if offset == 0:
                    flags |= ch.flags & FLAG_BEGIN
                if offset + frag >= n:
                    flags |= ch.flags & FLAG_END
                piece = ch.data[offset : offset + frag]
                recut.append(OutChunk(tsn, ch.stream, ch.ssn, ch.ppid, flags, piece, ch.key_id))
                tsn += 1
        self._pending = recut
        self.next_tsn = tsn

    # -- queueing ----------------------------------------------------------------------

    @property
    def outbound_streams(self) -> int:
        """Streams we may send on."""
        return len(self._ssn)

    def enqueue(self, data: bytes, stream: int, ppid: int, unordered: bool) -> None:
        """Queue one user message: fragment it and give each fragment a TSN."""
        self.queued_bytes += len(data)
        held = self._held.get(stream)
        if held is not None:
            held.messages.append((data, ppid, unordered, self.key_id))
            return
        if unordered:
            ssn = 0
            u = FLAG_UNORDERED
        else:
            ssn = self._ssn[stream]
            self._ssn[stream] = (ssn + 1) & 0xFFFF
            u = 0
        view = memoryview(data)
        n = len(view)
        frag = self._frag
        tsn = self.next_tsn
        append = self._pending.append
        key_id = self.key_id
        if n <= frag:
            append(OutChunk(tsn, stream, ssn, ppid, u | FLAG_BEGIN | FLAG_END, view, key_id))
            self.next_tsn = tsn + 1
            return
        for offset in range(0, n, frag):
            flags = u
            if offset == 0:
                flags |= FLAG_BEGIN
            if offset + frag >= n:
                flags |= FLAG_END
            append(OutChunk(tsn, stream, ssn, ppid, flags, view[offset : offset + frag], key_id))
            tsn += 1
        self.next_tsn = tsn

    def hold_streams(self, streams: tuple[int, ...]) -> int:
        """Start holding new messages on ``streams``; return the last assigned TSN."""
        for s in streams:
            self._held.setdefault(s, _Held())
        return (self.next_tsn - 1) & _M32

    def release_streams(self, streams: tuple[int, ...], reset: bool) -> None:
        """End a reset: restart the SSNs if it was performed, then queue held messages."""
        for s in streams:
            if reset:
                self._ssn[s] = 0
            held = self._held.pop(s, None)
            if held is not None:
                key_id = self.key_id
                for data, ppid, unordered, held_key in held.messages:
                    self.queued_bytes -= len(data)
                    self.key_id = held_key
                    self.enqueue(data, s, ppid, unordered)
                self.key_id = key_id

    @property
    def has_pending(self) -> bool:
        """Whether anything waits to be (re)transmitted."""
        return bool(self._pending) or self._rtx_count > 0

    @property
    def outstanding(self) -> bool:
        """Whether any DATA is queued, held or not yet cumulatively acknowledged."""
        return bool(self._sent) or bool(self._pending) or bool(self._held)

    @property
    def highest_tsn_sent(self) -> int:
        """The highest TSN transmitted so far (unwrapped)."""
        return self._sent[-1].tsn if self._sent else self.cum_ack

    # -- transmission ------------------------------------------------------------------

    def can_send(self) -> bool:
        """Whether :meth:`next_chunk` would return a chunk now."""
        if self._rtx_count:
            return self._send_one_now or self.flight < self.cwnd
        if not self._pending:
            return False
        if self.flight >= self.cwnd and not self._send_one_now:
            return False
        return self.flight == 0 or self._pending[0].size <= self.peer_rwnd

    def next_chunk(self, now: float) -> OutChunk | None:
        """The next DATA chunk to put on the wire, or ``None`` (Section 6.1).

        Retransmissions come first (rule C), then new data while the flight size is
        below cwnd (rule B) and the peer's window holds it (rule A; with nothing in
        flight one chunk goes anyway, which is the zero window probe).
        """
        if self._rtx_count:
            if not (self._send_one_now or self.flight < self.cwnd):
                return None
            for ch in self._sent:
                if ch.rtx:
                    ch.rtx = False
                    self._rtx_count -= 1
                    if self._rtt_tsn == ch.tsn:
                        self._rtt_tsn = None  # Karn's rule: no sample from a retransmission
                    self._transmit(ch, now)
                    return ch
            self._rtx_count = 0  # unreachable when the count is right; heal if not
        # can_send() without retransmissions, inlined: this runs for every chunk.
        pending = self._pending
        if not pending:
            return None
        flight = self.flight
        if flight >= self.cwnd and not self._send_one_now:
            return None
        ch = pending[0]
        if flight and ch.size > self.peer_rwnd:
            return None
        pending.popleft()
        self._sent.append(ch)
        if self.peer_rwnd < ch.size:
            self.probing = True
        if self._rtt_tsn is None:
            self._rtt_tsn = ch.tsn
        self._transmit(ch, now)
        return ch

    def _transmit(self, ch: OutChunk, now: float) -> None:
        ch.tx_count += 1
        ch.sent_at = now
        ch.misses = 0
        if not ch.in_flight:
            ch.in_flight = True
            self.flight += ch.size
        rwnd = self.peer_rwnd - ch.size
        self.peer_rwnd = rwnd if rwnd > 0 else 0
        if self.t3_deadline is None:
            # Section 6.3.2, R1: start T3-rtx when sending with none running.
            self.t3_deadline = now + self.rto.rto

    def packet_done(self) -> None:
        """The association finished a packet: the one-packet exemption is used up."""
        self._send_one_now = False

    # -- acknowledgement ---------------------------------------------------------------

    def on_sack(self, sack: SackChunk, now: float) -> SackResult:
        """Process a SACK (RFC 9260, Section 6.2.1; Section 7.2 for cwnd).

        Raises:
            ProtocolViolation: the SACK acknowledges a TSN we never sent.
        """
        result = SackResult()
        d = (sack.cumulative_tsn_ack - self.cum_ack) & _M32
        if d >= _HALF32:
            return result  # D i: older than our cumulative ack point: drop it
        new_cum = self.cum_ack + d
        highest = self.highest_tsn_sent
        if new_cum > highest:
            raise ProtocolViolation(
                "SACK for a TSN never sent",
                ProtocolViolationCause(b"cumulative TSN ack beyond the highest TSN sent"),
            )
        flight_before = self.flight
        was_probing = self.probing
        acked_bytes = 0
        htna = -1  # highest TSN newly acknowledged (Section 7.2.4)
        sent = self._sent
        while sent and sent[0].tsn <= new_cum:
            ch = sent.popleft()
            self.queued_bytes -= ch.size
            if ch.in_flight:
                self.flight -= ch.size
            if ch.rtx:
                self._rtx_count -= 1
            if ch.acked:
                self._acked_count -= 1
            else:
                acked_bytes += ch.size
                htna = ch.tsn
                if ch.tsn == self._rtt_tsn:
                    if ch.tx_count == 1:
                        self.rto.sample(now - ch.sent_at)
                    self._rtt_tsn = None
        if d:
            result.cum_advanced = True
            self.cum_ack = new_cum
        if sack.gap_blocks or self._acked_count:
            gap_htna, gap_bytes = self._apply_gap_blocks(sack, now, highest)
            htna = max(htna, gap_htna)
            acked_bytes += gap_bytes
        result.new_data_acked = acked_bytes > 0
        if htna >= 0:
            self._count_misses(htna, result.cum_advanced)
        # Section 6.2.1, D iv: rwnd = a_rwnd minus the bytes still outstanding.
        self.peer_rwnd = max(0, sack.a_rwnd - self.flight)
        if self.peer_rwnd > 0:
            self.probing = False
            if was_probing and not result.cum_advanced:
                # The window reopened: the probes were dropped, resend them now rather
                # than at the (backed-off) T3 expiry.
                self._mark_for_retransmission(include_acked=False)
        if self._fast_recovery_exit is not None and self.cum_ack >= self._fast_recovery_exit:
            self._fast_recovery_exit = None
        if result.cum_advanced:
            self._grow_cwnd(acked_bytes, flight_before)
        # Section 6.3.2, R2 and R3: the T3-rtx timer.
        if not sent:
            self.t3_deadline = None
            self._partial_bytes_acked = 0
            result.all_acked = True
        elif result.cum_advanced:
            self.t3_deadline = now + self.rto.rto
        return result

    def _apply_gap_blocks(self, sack: SackChunk, now: float, highest: int) -> tuple[int, int]:
        """Mark chunks acked or not per this SACK's Gap Ack Blocks.

        Returns the highest newly acked TSN (-1 if none) and the bytes newly acked.
        Chunks acked before but absent from this SACK were reneged (Section 6.2).
        """
        base = self.cum_ack
        blocks = sorted(
            (base + start, base + end) for start, end in sack.gap_blocks if 0 < start <= end
        )
        newly = 0
        htna = -1
        i = 0
        n = len(blocks)
        previously_acked = self._acked_count
        for ch in self._sent:
            t = ch.tsn
            while i < n and blocks[i][1] < t:
                i += 1
            if i >= n and not previously_acked:
                break
            if ch.acked:
                previously_acked -= 1
            if i < n and blocks[i][0] <= t:
                if t > highest:
                    break  # a gap block beyond what we sent: ignore the excess
                if not ch.acked:
                    ch.acked = True
                    self._acked_count += 1
                    newly += ch.size
                    htna = t
                    if ch.in_flight:
                        ch.in_flight = False
                        self.flight -= ch.size
                    if ch.rtx:
                        ch.rtx = False
                        self._rtx_count -= 1
                    if t == self._rtt_tsn:
                        if ch.tx_count == 1:
                            self.rto.sample(now - ch.sent_at)
                        self._rtt_tsn = None
            elif ch.acked:
                ch.acked = False  # reneged (Section 6.2): T3-rtx will resend it
                self._acked_count -= 1
        return htna, newly

    def _count_misses(self, htna: int, cum_advanced: bool) -> None:
        """Section 7.2.4: count miss indications; fast retransmit on the third."""
        marked = False
        for ch in self._sent:
            if ch.tsn >= htna:
                break
            if ch.acked or ch.rtx or not ch.in_flight:
                continue
            ch.misses += 1
            if ch.misses >= FAST_RETRANSMIT_MISSES and not ch.fast_rtx_done:
                ch.fast_rtx_done = True
                ch.rtx = True
                self._rtx_count += 1
                ch.in_flight = False
                self.flight -= ch.size
                marked = True
        if marked:
            if self._fast_recovery_exit is None:
                # Enter fast recovery: halve once per window of data.
                self.ssthresh = max(self.cwnd // 2, 4 * self._pmtu)
                self.cwnd = self.ssthresh
                self._partial_bytes_acked = 0
                self._fast_recovery_exit = self.highest_tsn_sent
            self._send_one_now = True

    def _grow_cwnd(self, acked: int, flight_before: int) -> None:
        """Sections 7.2.1 and 7.2.2: slow start and congestion avoidance."""
        if self._fast_recovery_exit is not None:
            return  # no cwnd growth in fast recovery (Section 7.2.4)
        if self.cwnd <= self.ssthresh:
            if flight_before >= self.cwnd - self._pmtu:
                self.cwnd += min(acked, self._pmtu)
        else:
            self._partial_bytes_acked += acked
            if self._partial_bytes_acked >= self.cwnd and flight_before >= self.cwnd:
                self._partial_bytes_acked -= self.cwnd
                self.cwnd += self._pmtu

    def on_rtt(self, r: float) -> None:
        """An RTT measured outside DATA (HEARTBEAT ACK, COOKIE ACK)."""
        self.rto.sample(r)

    # -- timeouts ----------------------------------------------------------------------

    def on_t3_expired(self, now: float) -> None:
        """Section 6.3.3: T3-rtx expired: back off, collapse cwnd, resend outstanding."""
        self.t3_deadline = None
        if not self._sent:
            return
        # E1 / Section 7.2.3.
        self.ssthresh = max(self.cwnd // 2, 4 * self._pmtu)
        self.cwnd = self._pmtu
        self._partial_bytes_acked = 0
        self._fast_recovery_exit = None
        # E2.
        self.rto.back_off()
        self._rtt_tsn = None
        # E3: everything outstanding is marked; cwnd (one MTU now) lets one packet go.
        if not self._mark_for_retransmission(include_acked=False):
            # Only gap-acked chunks remain and the peer still holds back the cumulative
            # ack: it must have reneged them.
            self._mark_for_retransmission(include_acked=True)
        self._send_one_now = True

    def _mark_for_retransmission(self, include_acked: bool) -> int:
        count = 0
        for ch in self._sent:
            if ch.rtx or (ch.acked and not include_acked):
                continue
            if ch.acked:
                ch.acked = False
                self._acked_count -= 1
            ch.rtx = True
            self._rtx_count += 1
            count += 1
            if ch.in_flight:
                ch.in_flight = False
                self.flight -= ch.size
        return count

    def fail_all(self) -> int:
        """The association ended: drop everything; return how many bytes were unsent."""
        lost = self.queued_bytes
        self._pending.clear()
        self._sent.clear()
        self._held.clear()
        self.queued_bytes = 0
        self.flight = 0
        self._rtx_count = 0
        self._acked_count = 0
        self.t3_deadline = None
        return lost
