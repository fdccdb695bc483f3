"""Packetization Layer Path MTU Discovery (RFC 8899) for one association, sans-IO.

Theory of operation
===================

An association must not send packets larger than its path carries, and the address of
a peer says little about that path, so the size is discovered (RFC 8899, Section 6.2,
which updates RFC 9260 / RFC 6951 for SCTP): a *probe* is a packet of exactly the size
to try, a minimal HEARTBEAT padded with a PAD chunk (RFC 4820), and its HEARTBEAT ACK
confirms that the size crosses the path. Probes carry no user data: a lost one costs
nothing to repair, is not retransmitted, is neither congestion- nor flow-controlled,
and never counts towards the association's error counter (the peer's liveness is the
business of heartbeats and retransmissions, not of a probe too big for the path).

This module is the state machine of RFC 8899, Section 5.2, in SCTP packet bytes (the
UDP payload: the IP and UDP headers below are the association's ``overhead``):

* ``DISABLED``: before the association is up, after it ends, or for good when there is
  nothing to search (the configured maximum is not above ``BASE_PLPMTU``, or the user
  turned discovery off): the packet size is then simply the configured one.
* ``BASE``: the association starts with ``BASE_PLPMTU`` (1200 bytes of SCTP packet,
  which is at most 1248 bytes of IPv6: inside the 1280 every IPv6 path carries) and
  confirms it with a probe of that size.
* ``SEARCHING``: probes upward. The first probe is ``MAX_PLPMTU`` (the configured
  maximum, lowered to the local interface's MTU when the driver knows it), which is the
  answer on loopback and on most local networks, so the search usually ends after one
  round trip. A size that fails ``MAX_PROBES`` probes in a row is too big; the search
  then tries the common MTU plateaus below it (9000, 1500, 1400, 1280 bytes of IP), and
  the largest one confirmed ends it. A failed probe says nothing about the path's
  health: it only lowers the ceiling.
* ``SEARCH_COMPLETE``: no probes (SCTP acknowledges its data, so Section 6.2.1.3 forbids
  the CONFIRMATION_TIMER) until ``PMTU_RAISE_TIMER`` (600 s) starts a new search, in
  case the path grew, if DATA was sent meanwhile.

Probes wait for the association's first DATA (Section 5.1.1 lets a sender hold them
back while it sends no application data): a server's thousands of idle associations
then cost no 64 KiB loopback probes, while one that sends starts the search with its
first packet.
* ``ERROR``: not even ``BASE_PLPMTU`` was confirmed; we keep sending at that size (here
  MIN_PLPMTU = BASE_PLPMTU, which Section 5.2 allows) and try the base probe again later.

Black holes (Section 4.3, the third indicator): when the path shrinks below the packet
size in use, full-size packets vanish without a word. ``BLACK_HOLE_TIMEOUTS`` retransmission
timeouts in a row without the cumulative TSN moving (the first may be plain loss; the
retransmission that follows is one full-size packet, which the black hole eats again)
drop the association back to ``BASE`` and start over. A local ``EMSGSIZE`` from the
socket (the kernel knows the interface cannot carry the packet) is the same news,
immediately: a failed probe, or a black hole if it hit a packet of the current size.

DATA already cut for the old size cannot be cut again once sent (RFC 9260, Section 6.9;
RFC 8899, Section 6.2): such packets are handed out as :class:`Fragmentable`, which the
driver sends with IP fragmentation allowed.
"""

from __future__ import annotations

import struct
from enum import Enum

#: Section 5.1.2: the PLPMTU every path is assumed to carry until probed, in SCTP packet
#: bytes. 1200 + 8 (UDP) + 40 (IPv6) = 1248 <= 1280, the IPv6 minimum link MTU.
BASE_PLPMTU = 1200
#: Section 5.1.2: consecutive unacknowledged probes of one size before it counts as too big.
MAX_PROBES = 3
#: Section 5.1.1: how long the search result is used before probing upward again.
PMTU_RAISE_TIMER = 600.0
#: Section 5.1.1: PROBE_TIMER "MUST NOT be smaller than 1 second". We wait the larger of
#: that and the association's RTO, which already bounds how long an answer takes on
#: this path (the SHOULD of 15 s is for transports that measure no round trip).
MIN_PROBE_TIMER = 1.0
#: How long the ERROR state waits before trying the base probe again.
ERROR_RETRY = 60.0
#: Retransmission timeouts in a row, without progress, that reveal a black hole.
BLACK_HOLE_TIMEOUTS = 2
#: IP-level MTUs common on real paths (jumbo Ethernet, Ethernet, tunnels, IPv6 minimum),
#: tried in this order once MAX_PLPMTU has failed (RFC 1191's plateau idea).
PLATEAUS = (9000, 1500, 1400, 1280)
#: Heartbeat Info of a probe: the time it left, a nonce, and its size.
PROBE_INFO = struct.Struct("!d8sI")


class PMTUDState(Enum):
    """The states of RFC 8899, Section 5.2 (Figure 5)."""

    DISABLED = "DISABLED"
    BASE = "BASE"
    SEARCHING = "SEARCHING"
    SEARCH_COMPLETE = "SEARCH_COMPLETE"
    ERROR = "ERROR"


class Fragmentable(bytes):
    """A datagram larger than the current path MTU, which the driver must send with IP
    fragmentation allowed (DF clear): it carries DATA cut for a larger path MTU before
    the path shrank, and DATA once sent is never cut again (RFC 9260, Section 6.9;
    RFC 8899, Section 6.2). Everything else keeps DF set, probes above all."""

    __slots__ = ()


class PathMTU:
    """The PLPMTUD state of one association (one path), in SCTP packet bytes.

    Args:
        max_size: MAX_PLPMTU: the largest SCTP packet we would ever send.
        overhead: the IP and UDP headers under each packet, for :attr:`path_mtu`.
        enabled: search at all; if false, ``max_size`` is used from the start.

    The association asks :meth:`take_probe` for a probe whenever :attr:`probe_due`,
    reports HEARTBEAT ACKs to :meth:`on_probe_ack`, retransmission timeouts and progress
    to :meth:`on_t3_expired` / :meth:`on_progress`, and runs :meth:`on_timer` at
    :attr:`deadline`. :attr:`size` is the packet size to use now.
    """

    __slots__ = (
        "_data",
        "_due",
        "_failed",
        "_hint",
        "_idle",
        "_nonce",
        "_timeouts",
        "_tried",
        "base",
        "deadline",
        "enabled",
        "max_size",
        "overhead",
        "probe_count",
        "probed_size",
        "size",
        "state",
    )

    def __init__(self, max_size: int, overhead: int, enabled: bool = True) -> None:
        self.overhead = overhead
        self.max_size = max_size & ~3  # SCTP packets are whole 4-byte words
        self.base = min(BASE_PLPMTU, self.max_size)
        self.enabled = enabled and self.max_size > self.base
        #: The PLPMTU: the largest packet we send now.
        self.size = self.base if self.enabled else self.max_size
        self.state = PMTUDState.DISABLED
        #: PROBED_SIZE and PROBE_COUNT (Section 5.1.3) of the probe in flight.
        self.probed_size = 0
        self.probe_count = 0
        self._due = False  # a probe should leave with the next packets...
        self._idle = True  # ...but not before the association's first DATA
        self._data = False  # DATA sent since the search completed
        #: PROBE_TIMER, PMTU_RAISE_TIMER or the ERROR retry, whichever runs.
        self.deadline: float | None = None
        self._nonce: bytes | None = None  # of the probe in flight
        self._failed = self.max_size + 4  # the smallest size found too big
        self._hint = 0  # a size an ICMP Packet Too Big suggested, to probe first
        self._tried = False  # MAX_PLPMTU was probed in this search
        self._timeouts = 0  # T3-rtx expiries in a row without progress

    @property
    def probe_due(self) -> bool:
        """Whether a probe should leave with the next packets. Not before the first
        DATA: an association that never sends any (thousands of idle ones on a server)
        has no use for a large path MTU, so it sends no probes (Section 5.1.1 allows
        inhibiting them while no application data is sent)."""
        return self._due and not self._idle

    def on_data_sent(self) -> None:
        """DATA went out: probing may begin, and the raise timer will search again."""
        self._idle = False
        self._data = True

    @property
    def path_mtu(self) -> int:
        """The PLPMTU as an IP-level MTU (packet size plus IP and UDP headers)."""
        return self.size + self.overhead

    # -- driven by the association ---------------------------------------------------

    def start(self) -> None:
        """The association is up (Section 5.2: DISABLED -> BASE): probe BASE_PLPMTU."""
        if self.enabled and self.state is PMTUDState.DISABLED:
            self._enter_base()

    def stop(self) -> None:
        """The association is over: no more probes or timers."""
        self.state = PMTUDState.DISABLED
        self.enabled = False
        self._due = False
        self.deadline = None
        self._nonce = None

    def limit_max(self, max_size: int) -> None:
        """Lower MAX_PLPMTU (Section 5.3.1: the local MTU, when the driver learns it)."""
        max_size &= ~3
        if max_size >= self.max_size or max_size < self.base:
            return
        self.max_size = max_size
        self._failed = min(self._failed, max_size + 4)
        if self.size > max_size:
            self.size = max_size
        if max_size <= self.base:
            self.stop()
            self.size = max_size

    def take_probe(self, now: float, rto: float, nonce: bytes) -> tuple[int, bytes]:
        """The probe to send now: ``(size, heartbeat info)``; starts the PROBE_TIMER."""
        self._due = False
        self._nonce = nonce
        self.deadline = now + max(MIN_PROBE_TIMER, rto)
        return self.probed_size, PROBE_INFO.pack(now, nonce, self.probed_size)

    def on_probe_ack(self, info: bytes, now: float) -> float | None:
        """A HEARTBEAT ACK with ``info``; if it confirms our probe in flight, move on
        (Section 5.2) and return when that probe was sent (an RTT sample)."""
        if len(info) != PROBE_INFO.size or self._nonce is None:
            return None
        sent_at, nonce, size = PROBE_INFO.unpack(info)
        if nonce != self._nonce or size != self.probed_size:
            return None
        self._nonce = None
        self.deadline = None
        self.probe_count = 0
        self.size = max(self.size, size)  # PLPMTU = PROBED_SIZE
        self._search_next(now)
        return float(sent_at)

    def on_timer(self, now: float) -> None:
        """The deadline passed: a probe went unanswered, or a wait is over."""
        self.deadline = None
        state = self.state
        if state is PMTUDState.SEARCH_COMPLETE:
            # PMTU_RAISE_TIMER: look again for a larger size, if anyone is sending.
            if not self._data or self.size >= self.max_size:
                self.deadline = now + PMTU_RAISE_TIMER
                return
            self._failed = self.max_size + 4
            self._tried = False
            self.state = PMTUDState.SEARCHING
            self._search_next(now)
            return
        if state is PMTUDState.ERROR and self._nonce is None:
            self._enter_base()
            return
        if self._nonce is None:
            return
        self._nonce = None
        self.probe_count += 1
        if self.probe_count < MAX_PROBES:
            self._due = True  # the same size again: one loss proves nothing
        else:
            self._probe_failed(now)

    def on_t3_expired(self) -> None:
        """A retransmission timeout (T3-rtx): counts towards black hole detection."""
        self._timeouts += 1
        if self._timeouts >= BLACK_HOLE_TIMEOUTS and self.size > self.base:
            self.black_hole()

    def on_progress(self) -> None:
        """The peer acknowledged new data: whatever is lost, it is not everything."""
        self._timeouts = 0

    def refused(self, length: int, now: float) -> None:
        """The local stack refused to send a datagram of ``length`` bytes
        (``EMSGSIZE``): the interface cannot carry it (Section 4.6's local indication)."""
        if self.state is PMTUDState.DISABLED:
            return
        if self._nonce is not None and length == self.probed_size:
            self.probe_count = MAX_PROBES  # no use trying that size again
            self._nonce = None
            self.deadline = None
            self._probe_failed(now)
        elif length <= self.size and self.size > self.base:
            self.black_hole()

    def packet_too_big(self, size: int, now: float) -> None:
        """A validated ICMP Packet Too Big says the path carries at most ``size`` bytes
        of SCTP packet (PL_PTB_SIZE, Section 4.6.2). Only a hint: it ends a probe of a
        larger size at once and becomes the next size probed; below the current size
        it is a black hole. Sizes it cannot lower anything with are ignored, and so is
        one below the base (ICMP is easy to forge; probes still decide)."""
        size &= ~3
        if self.state is PMTUDState.DISABLED or size < self.base:
            return
        if self._nonce is not None and self.size <= size < self.probed_size:
            self._failed = min(self._failed, self.probed_size)
            self._hint = size
            self._nonce = None
            self.deadline = None
            self._search_next(now)
        elif size < self.size:
            self._hint = size
            self.black_hole()

    def black_hole(self) -> None:
        """Packets of the current size no longer get through (Section 4.3): back to
        BASE_PLPMTU, and search again from there."""
        if self.state is PMTUDState.DISABLED:
            return
        self._failed = min(self._failed, self.size)
        self.size = self.base
        self._enter_base()

    # -- the search ------------------------------------------------------------------

    def _enter_base(self) -> None:
        self.state = PMTUDState.BASE
        self._timeouts = 0
        self._tried = False
        self._probe(self.base)

    def _probe(self, size: int) -> None:
        self.probed_size = size
        self.probe_count = 0
        self._due = True
        self._nonce = None
        self.deadline = None

    def _probe_failed(self, now: float) -> None:
        """PROBE_COUNT reached MAX_PROBES for PROBED_SIZE."""
        self.probe_count = 0
        if self.state is PMTUDState.BASE:
            # BASE -> ERROR: even the base size does not get through (or the peer is
            # silent); keep using it, and try again later.
            self.state = PMTUDState.ERROR
            self.deadline = now + ERROR_RETRY
            return
        self._failed = min(self._failed, self.probed_size)
        self._search_next(now)

    def _search_next(self, now: float) -> None:
        """Probe the next candidate above PLPMTU and below the smallest failure, or
        declare the search complete."""
        if self.state in (PMTUDState.BASE, PMTUDState.ERROR):
            self.state = PMTUDState.SEARCHING
        candidate = self._candidate()
        if candidate is None:
            self.state = PMTUDState.SEARCH_COMPLETE
            self._data = False
            self.deadline = now + PMTU_RAISE_TIMER
            return
        self._probe(candidate)

    def _candidate(self) -> int | None:
        hint, self._hint = self._hint, 0
        if self.size < hint < self._failed:
            return hint
        if not self._tried:
            self._tried = True
            if self.size < self.max_size < self._failed:
                return self.max_size
        for mtu in PLATEAUS:
            size = (mtu - self.overhead) & ~3
            if self.size < size < self._failed and size <= self.max_size:
                return size
        return None
