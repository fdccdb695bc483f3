"""The receiving half of an association: TSN tracking, reassembly, ordering, window.

TSNs and SSNs are unwrapped into growing ints as they arrive (see ``_outbound``).

Three stages, each bounded:

1. TSN tracking (RFC 9260, Section 6.2): the cumulative TSN, the set of TSNs received
   above it (at most 65535 ahead, the reach of a Gap Ack Block), duplicates to report.
2. Reassembly (Section 6.9): fragments form *runs* of consecutive TSNs, indexed by their
   first and last TSN; a fragment joins its neighbours (the smaller run is merged into
   the larger, so a message costs O(n log n) whatever the arrival order) and a run from a
   B to an E fragment is a message. A run larger than ``max_message_size`` aborts the
   association: we never buffer without bound.
3. Ordering (Section 6.6), per stream: an ordered message waits only for the earlier
   SSNs *of its own stream*; nothing on one stream ever waits for another.

The advertised window is ``receive_buffer`` minus what is buffered in stages 2 and 3
minus what was delivered but not yet consumed by the application. Each fragment or
message is charged at least ``MIN_CHARGE`` bytes: what it costs us in Python objects,
so a peer sending one-byte messages (or one-byte fragments that never join) fills the
window long before it fills our memory (it used to hold 80 MB in a 1 MB window).
"""

from __future__ import annotations

from collections import deque

from ._causes import OutOfResource, ProtocolViolationCause
from ._chunks import DataChunk, SackChunk
from ._config import SCTPConfig
from ._errors import ProtocolViolation
from ._events import Event, MessageReceived, StreamResetDone

_M32 = 0xFFFFFFFF
_HALF32 = 1 << 31
#: Gap Ack Block offsets are 16-bit: we cannot acknowledge a TSN further ahead.
MAX_TSN_AHEAD = 0xFFFF
#: Duplicate TSNs reported per SACK, and Gap Ack Blocks per SACK (keeps a SACK small).
MAX_DUPS = 16
MAX_GAP_BLOCKS = 64
#: Stream resets of the peer waiting for missing data (RFC 6525, Section 5.2.2). A peer
#: has one request outstanding at a time (Section 5.1.1), so one would do; a few more
#: forgive a peer's sloppiness, and bound what a hostile one makes us keep.
MAX_DEFERRED_RESETS = 4
#: The least a buffered fragment or message counts against the window: roughly its
#: bookkeeping (a run or message object, a bytes object, dict and deque slots).
MIN_CHARGE = 256


def charge(n: int) -> int:
    """What ``n`` bytes of user data held as one fragment or message cost the window."""
    return n if n > MIN_CHARGE else MIN_CHARGE


class DataResult:
    """Outcomes of :meth:`ReceiveSide.on_data`."""

    NEW = 0
    DUPLICATE = 1
    DROPPED = 2
    INVALID_STREAM = 3


class _Run:
    """Consecutive fragments of one message (not yet complete)."""

    __slots__ = (
        "begin",
        "charge",
        "end",
        "first",
        "last",
        "parts",
        "ppid",
        "size",
        "ssn",
        "stream",
        "u",
    )

    def __init__(self, tsn: int, c: DataChunk) -> None:
        self.first = tsn
        self.last = tsn
        self.stream = c.stream_id
        self.ssn = c.ssn
        self.u = c.unordered
        self.ppid = c.ppid
        self.begin = c.beginning
        self.end = c.end
        self.parts: deque[bytes] = deque((c.user_data,))
        self.size = len(c.user_data)
        self.charge = charge(self.size)  # what it counts against the window

    def same_message(self, other: _Run) -> bool:
        return (
            self.stream == other.stream and self.u == other.u and (self.u or self.ssn == other.ssn)
        )


class _Message:
    __slots__ = ("data", "first_tsn", "ppid", "ssn", "stream")

    def __init__(self, stream: int, ssn: int, ppid: int, data: bytes, first_tsn: int) -> None:
        self.stream = stream
        self.ssn = ssn
        self.ppid = ppid
        self.data = data
        self.first_tsn = first_tsn


class _InStream:
    __slots__ = ("expected", "waiting")

    def __init__(self) -> None:
        self.expected = 0  # next SSN to deliver, unwrapped
        self.waiting: dict[int, _Message] = {}  # unwrapped SSN -> complete message


class ReceiveSide:
    """The peer's DATA: what we received, acknowledge, reassemble and deliver."""

    def __init__(
        self, config: SCTPConfig, peer_initial_tsn: int, inbound_streams: int, events: deque[Event]
    ) -> None:
        self._rcvbuf = config.receive_buffer
        self._max_message = config.max_message_size
        # Slack for a peer's zero-window probe and rounding: one full packet.
        self._slack = config.max_packet_size
        self.cum = peer_initial_tsn - 1
        self.highest = self.cum
        self._ooo: set[int] = set()
        self._dups: list[int] = []
        self._by_first: dict[int, _Run] = {}
        self._by_last: dict[int, _Run] = {}
        self._streams = [_InStream() for _ in range(inbound_streams)]
        self._events = events
        self.buffered = 0  # bytes in runs and in ordering queues
        self.unconsumed = 0  # bytes delivered, not yet consumed by the application
        # Sizes of the delivered messages not yet consumed, oldest first, and how much
        # of the oldest was consumed: ``consumed()`` refunds each message's charge.
        self._delivered: deque[int] = deque()
        self._head_consumed = 0
        # RFC 6525, Section 5.2.2: deferred resets: (last TSN, streams); parked messages.
        self._deferred: list[tuple[int, tuple[int, ...]]] = []
        self._parked: list[_Message] = []

    @property
    def inbound_streams(self) -> int:
        """Streams the peer may send on."""
        return len(self._streams)

    @property
    def a_rwnd(self) -> int:
        """The window we advertise (Section 6.2)."""
        return max(0, self._rcvbuf - self.buffered - self.unconsumed)

    @property
    def cum_wire(self) -> int:
        """The cumulative TSN ack, as a 32-bit wire value."""
        return self.cum & _M32

    def unwrap(self, tsn: int) -> int:
        """An unwrapped TSN for wire TSN ``tsn``, taken as nearest to our cumulative TSN."""
        d = (tsn - self.cum) & _M32
        return self.cum + d if d < _HALF32 else self.cum + d - (1 << 32)

    # -- DATA --------------------------------------------------------------------------

    def on_data(self, c: DataChunk) -> int:
        """Take one DATA chunk (its user data is not empty); return a ``DataResult``.

        Raises:
            ProtocolViolation: fragments that cannot belong together, or a message
                above ``max_message_size``.
        """
        cum = self.cum
        d = (c.tsn - cum) & _M32  # unwrap(), inlined: this runs for every DATA chunk
        n = len(c.user_data)
        cost = n if n > MIN_CHARGE else MIN_CHARGE
        used = self.buffered + self.unconsumed + cost
        ooo = self._ooo
        if d == 1 and not ooo:
            # The common case, the next TSN with none received out of order (so the
            # highest TSN received is the cumulative one): no duplicate, no gap to fill.
            if used > self._rcvbuf:
                return DataResult.DROPPED  # Section 6.2, as below
            self.cum = self.highest = t = cum + 1
        else:
            t = cum + d if d < _HALF32 else cum + d - (1 << 32)
            if t <= cum or t in ooo:
                if len(self._dups) < MAX_DUPS:
                    self._dups.append(c.tsn)
                return DataResult.DUPLICATE
            if t - cum > MAX_TSN_AHEAD:
                return DataResult.DROPPED
            if used > self._rcvbuf and (t > self.highest or used > self._rcvbuf + self._slack):
                # Section 6.2: no room: drop a chunk beyond the highest TSN received
                # (the window is the peer's to respect); accept one that fills a hole,
                # within one packet of slack.
                return DataResult.DROPPED
            if t == cum + 1:
                cum = t
                while cum + 1 in ooo:
                    cum += 1
                    ooo.discard(cum)
                self.cum = cum
            else:
                ooo.add(t)
            if t > self.highest:
                self.highest = t
        if c.stream_id >= len(self._streams):
            # Section 6.5: acknowledge the TSN, drop the data, report the stream.
            return DataResult.INVALID_STREAM
        if c.beginning and c.end:
            stream = self._streams[c.stream_id]
            if (
                c.ssn == stream.expected & 0xFFFF
                and not (c.unordered or stream.waiting or self._deferred)
                and n <= self._max_message
            ):
                # The common case, the next message of its stream, whole: what
                # _complete() would do, without the _Message it would make.
                stream.expected += 1
                self._deliver_data(c.stream_id, c.ppid, c.user_data, False)
            else:
                self._complete(_Message(c.stream_id, c.ssn, c.ppid, c.user_data, t), c.unordered)
        else:
            self.buffered += cost
            self._fragment(t, c)
        if self._deferred:
            self._check_deferred_resets()
        return DataResult.NEW

    def _fragment(self, t: int, c: DataChunk) -> None:
        left = self._by_last.get(t - 1)
        right = self._by_first.get(t + 1)
        if (
            right is None
            and left is not None
            and not left.end
            and not c.beginning
            and left.stream == c.stream_id
            and left.u == c.unordered
            and (left.u or left.ssn == c.ssn)
        ):
            # The common case, fragments in order: grow the run in place.
            del self._by_last[t - 1]
            left.parts.append(c.user_data)
            left.last = t
            left.end = c.end
            n = len(c.user_data)
            left.size += n
            left.charge += n if n > MIN_CHARGE else MIN_CHARGE  # charge(n), inlined
            run = left
        else:
            run = self._join(t, c, left, right)
        if run.size > self._max_message:
            raise _too_big(self._max_message)
        if run.begin and run.end:
            del self._by_first[run.first]
            self.buffered -= run.charge
            data = b"".join(run.parts)
            self._complete(_Message(run.stream, run.ssn, run.ppid, data, run.first), run.u)
        else:
            self._by_last[run.last] = run

    def _join(self, t: int, c: DataChunk, left: _Run | None, right: _Run | None) -> _Run:
        """A fragment that starts a run or joins one or two: return the run, registered
        by its first TSN (the caller registers its last TSN, or completes it)."""
        run = _Run(t, c)
        # Section 6.9: a message's fragments have consecutive TSNs, so a neighbour run
        # that is open towards us must be the same message, and one that is closed
        # towards us must not be.
        if left is not None and (not left.end) == c.beginning:
            raise _violation("fragment does not fit the one before it")
        if right is not None and (not right.begin) == c.end:
            raise _violation("fragment does not fit the one after it")
        if left is not None and not c.beginning:
            if not left.same_message(run):
                raise _violation("fragments of one message on different streams")
            del self._by_last[t - 1]
            del self._by_first[left.first]
            run = _merge(left, run)
        if right is not None and not c.end:
            if not right.same_message(run):
                raise _violation("fragments of one message on different streams")
            del self._by_first[t + 1]
            del self._by_last[right.last]
            run = _merge(run, right)
        self._by_first[run.first] = run
        return run

    def _complete(self, msg: _Message, unordered: bool) -> None:
        """A whole message: deliver it, or queue it behind earlier SSNs of its stream."""
        if len(msg.data) > self._max_message:
            raise _too_big(self._max_message)
        if unordered:
            self._deliver(msg, True)
            return
        if self._deferred and self._must_park(msg):
            self.buffered += charge(len(msg.data))
            self._parked.append(msg)
            return
        stream = self._streams[msg.stream]
        d = (msg.ssn - stream.expected) & 0xFFFF
        if d >= 0x8000:
            return  # an SSN we delivered already: nothing sane to do but drop it
        if d == 0:
            self._deliver(msg, False)
            stream.expected += 1
            waiting = stream.waiting
            while waiting:
                nxt = waiting.pop(stream.expected, None)
                if nxt is None:
                    break
                self.buffered -= charge(len(nxt.data))
                self._deliver(nxt, False)
                stream.expected += 1
        else:
            key = stream.expected + d
            if key not in stream.waiting:
                stream.waiting[key] = msg
                self.buffered += charge(len(msg.data))

    def _deliver(self, msg: _Message, unordered: bool) -> None:
        self._deliver_data(msg.stream, msg.ppid, msg.data, unordered)

    def _deliver_data(self, stream: int, ppid: int, data: bytes, unordered: bool) -> None:
        n = len(data)
        self.unconsumed += n if n > MIN_CHARGE else MIN_CHARGE  # charge(n), inlined
        self._delivered.append(n)
        self._events.append(MessageReceived(stream, ppid, data, unordered))

    def consumed(self, nbytes: int) -> None:
        """The application read ``nbytes`` of delivered data."""
        # Messages are consumed in the order they were delivered: refund the charge of
        # each one read completely.
        delivered = self._delivered
        n = nbytes + self._head_consumed
        refund = 0
        while delivered and n >= delivered[0]:
            size = delivered.popleft()
            n -= size
            refund += size if size > MIN_CHARGE else MIN_CHARGE  # charge(size), inlined
        self._head_consumed = n if delivered else 0
        self.unconsumed = max(0, self.unconsumed - refund)

    # -- SACK --------------------------------------------------------------------------

    def make_sack(self) -> SackChunk:
        """A SACK for what we hold now (Section 6.2), clearing the duplicate list."""
        cum = self.cum
        gaps: list[tuple[int, int]] = []
        if self._ooo:
            start = end = -1
            for t in sorted(self._ooo):
                off = t - cum
                if off == end + 1:
                    end = off
                    continue
                if start > 0:
                    gaps.append((start, end))
                    if len(gaps) >= MAX_GAP_BLOCKS:
                        break
                start = end = off
            else:
                gaps.append((start, end))
        dups = tuple(self._dups)
        self._dups.clear()
        return SackChunk(cum & _M32, self.a_rwnd, tuple(gaps), dups)

    @property
    def has_gaps(self) -> bool:
        """Whether TSNs are missing below the highest received (Section 6.7)."""
        return bool(self._ooo)

    @property
    def has_duplicates(self) -> bool:
        """Whether duplicates wait to be reported."""
        return bool(self._dups)

    # -- RFC 6525 stream reset, receiver side (Section 5.2.2) ---------------------------

    def reset_streams(self, streams: tuple[int, ...], last_tsn: int) -> bool:
        """The peer resets its outgoing ``streams`` (all if empty) after ``last_tsn``.

        Returns ``True`` if done now, ``False`` if deferred until the cumulative TSN
        reaches ``last_tsn`` (the answer is then "In progress").
        """
        lt = self.unwrap(last_tsn)
        # (A hostile list may repeat ids: keep each once.)
        streams = tuple(dict.fromkeys(streams)) if streams else tuple(range(len(self._streams)))
        if lt <= self.cum:
            self._perform_reset(streams)
            return True
        if not any(d == (lt, streams) for d in self._deferred):
            self._deferred.append((lt, streams))
        return False

    def cannot_defer(self, last_tsn: int) -> bool:
        """Whether a reset after ``last_tsn`` would have to wait, with no room left to
        remember it (``MAX_DEFERRED_RESETS``)."""
        return self.unwrap(last_tsn) > self.cum and len(self._deferred) >= MAX_DEFERRED_RESETS

    def valid_streams(self, streams: tuple[int, ...]) -> bool:
        """Whether every id in ``streams`` is one of our inbound streams."""
        return all(s < len(self._streams) for s in streams)

    def _must_park(self, msg: _Message) -> bool:
        return any(msg.first_tsn > lt and msg.stream in ss for lt, ss in self._deferred)

    def _check_deferred_resets(self) -> None:
        ready = [d for d in self._deferred if d[0] <= self.cum]
        if not ready:
            return
        self._deferred = [d for d in self._deferred if d[0] > self.cum]
        for _lt, streams in ready:
            self._perform_reset(streams)
        parked, self._parked = self._parked, []
        for msg in parked:
            self.buffered -= charge(len(msg.data))
            self._complete(msg, False)

    def _perform_reset(self, streams: tuple[int, ...]) -> None:
        for s in streams:
            stream = self._streams[s]
            for msg in stream.waiting.values():
                self.buffered -= charge(len(msg.data))
            stream.waiting.clear()
            stream.expected = 0
        self._events.append(StreamResetDone(streams, outgoing=False))


def _merge(left: _Run, right: _Run) -> _Run:
    """Join two adjacent runs, copying the smaller one's parts into the larger."""
    if len(left.parts) >= len(right.parts):
        left.parts.extend(right.parts)
        big = left
    else:
        right.parts.extendleft(reversed(left.parts))
        big = right
    big.first = left.first
    big.last = right.last
    big.begin = left.begin
    big.end = right.end
    big.ppid = left.ppid
    big.ssn = left.ssn
    big.size = left.size + right.size
    big.charge = left.charge + right.charge
    return big


def _violation(what: str) -> ProtocolViolation:
    return ProtocolViolation(what, ProtocolViolationCause(what.encode()))


def _too_big(limit: int) -> ProtocolViolation:
    return ProtocolViolation(f"peer sent a message larger than {limit} bytes", OutOfResource())
