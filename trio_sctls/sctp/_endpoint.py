"""An SCTP endpoint serving many associations over one UDP socket, sans-IO.

The endpoint owns one local SCTP port and demultiplexes packets to associations by the
peer's address (whatever hashable value the driver uses, typically ``(host, port)``)
and SCTP port; every association then checks the verification tag itself. A packet for
no association is handled statelessly: an INIT gets an INIT ACK whose State Cookie holds
everything (RFC 9260, Section 5.1.3), a COOKIE ECHO with a valid cookie creates the
association, anything else is answered per Section 8.4 ("out of the blue"). Nothing is
kept for a peer before its valid COOKIE ECHO, so INIT floods cost no memory.

RFC 6951, Section 5.4: a NAT may change the peer's UDP port. A packet from an unknown
address whose verification tag is one of our associations', from the same host and SCTP
port, moves that association to the new address.

Scale: nothing visits every association. An association tells its endpoint when it is
fed (a packet, a timer, or the application's ``send``, ``consumed``, ``shutdown``...,
called on the association directly), and only those associations are asked for packets
and events at the next :meth:`Endpoint.datagrams_to_send`; their deadlines then go into
a heap (``_schedule.Deadlines``) that :meth:`Endpoint.timer_deadline` and
:meth:`Endpoint.handle_timer` read. Associations are also indexed by verification tag
for the NAT case. So a flush, a timer or a datagram costs the same with ten thousand
idle associations as with one, and a driver serving many endpoints can set
:attr:`Endpoint.wakeup` to learn which of them have work.
"""

from __future__ import annotations

import random
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable

from ._assoc_base import with_defaults
from ._association import Association
from ._auth import leading_chunk
from ._chunks import CookieEchoChunk, InitChunk, ShutdownAckChunk
from ._config import SCTPConfig
from ._errors import LocalProtocolError, ParseError
from ._events import AssociationAccepted, Event
from ._handshake import CookieState, abort_init, build_init_ack, init_problem, ootb_response
from ._packet import Packet
from ._schedule import Deadlines

Address = Hashable
#: How long we remember the tag of a closed association (see ``Endpoint._linger``).
LINGER = 120.0


def _context(addr: Address) -> bytes:
    """What binds a cookie to the address it was sent to."""
    return repr(addr).encode()


class Endpoint:
    """Many associations on one local SCTP port (one UDP socket), sans-IO.

    Args:
        config: the options of every association of this endpoint.
        local_port: our SCTP port.
        secret: the State Cookie key (random if omitted).
        accept: answer INITs from new peers (a server); if false only :meth:`connect`
            creates associations.
        rng: randomness for tags and TSNs (tests pass a seeded one).

    Attributes:
        wakeup: if set, called with the endpoint whenever one of its associations is fed
            through the association's own methods (``send``, ``consumed``, ``shutdown``,
            ``abort``, ``reset_streams``...), i.e. when :meth:`datagrams_to_send` may have
            something new; a driver of many endpoints uses it to flush only those.
    """

    def __init__(
        self,
        config: SCTPConfig | None = None,
        *,
        local_port: int = 9899,
        secret: bytes | None = None,
        accept: bool = True,
        rng: random.Random | None = None,
    ) -> None:
        self.config, self._secret, self._rng = with_defaults(config, secret, rng)
        self.local_port = local_port
        self.accept = accept
        self._by_addr: dict[tuple[Address, int], Association] = {}
        self._addr: dict[Association, Address] = {}
        self._out: list[tuple[bytes, Address]] = []
        self._events: deque[tuple[Association, Event]] = deque()
        # Associations that may have events; an OrderedDict because next_event takes
        # from the front (O(1) here, unlike a dict with deletions at its front).
        self._ready: OrderedDict[Association, None] = OrderedDict()
        # Associations fed since the last datagrams_to_send: the only ones it visits.
        self._dirty: dict[Association, None] = {}
        self._timers: Deadlines[Association] = Deadlines()
        # Our verification tag -> association, for NAT rebinding (``_rebound``).
        self._by_tag: dict[int, Association] = {}
        self.wakeup: Callable[[Endpoint], None] | None = None
        # Tags of recently closed associations -> until when. Late duplicates of their
        # packets are dropped instead of drawing an out-of-the-blue ABORT, which could
        # reach a peer still finishing its shutdown; a SHUTDOWN ACK still gets its
        # SHUTDOWN COMPLETE (RFC 9260, Section 8.4 (5)).
        # Oldest first (expiries only grow): expired tags leave from the front, so
        # closing thousands of associations costs O(1) each, not a sweep of them all.
        self._linger: OrderedDict[int, float] = OrderedDict()
        self._now = 0.0

    @property
    def associations(self) -> list[Association]:
        """The associations this endpoint currently knows."""
        return list(self._addr)

    def address_of(self, association: Association) -> Address:
        """The peer address of one of our associations."""
        return self._addr[association]

    def connect(self, addr: Address, now: float, remote_port: int = 9899) -> Association:
        """Start a new association to ``addr`` as the initiator.

        Raises:
            LocalProtocolError: an association with that peer address and port exists.
        """
        existing = self._by_addr.get((addr, remote_port))
        if existing is not None and not existing.closed:
            raise LocalProtocolError(f"already associated with {addr!r} port {remote_port}")
        assoc = self._new_association(addr, remote_port)
        self._register(assoc, addr)
        assoc.connect(now)
        return assoc

    def _new_association(self, addr: Address, remote_port: int) -> Association:
        return Association(
            self.config,
            local_port=self.local_port,
            remote_port=remote_port,
            secret=self._secret,
            cookie_context=_context(addr),
            rng=self._rng,
        )

    def _register(self, assoc: Association, addr: Address) -> None:
        self._by_addr[(addr, assoc.remote_port)] = assoc
        self._addr[assoc] = addr
        self._by_tag[assoc.verification_tag] = assoc
        self._ready[assoc] = None
        self._dirty[assoc] = None
        self._watch(assoc)

    def _watch(self, assoc: Association) -> None:
        """Have ``assoc`` mark itself dirty whenever it is fed (``Association._changed``)."""

        def fed() -> None:
            dirty = self._dirty
            if assoc not in dirty:
                dirty[assoc] = None
                if self.wakeup is not None:
                    self.wakeup(self)

        assoc._watcher = fed

    @property
    def has_events(self) -> bool:
        """Whether :meth:`next_event` may have something to return."""
        return bool(self._events or self._ready)

    # -- incoming ----------------------------------------------------------------------

    def receive_datagram(
        self, data: bytes | bytearray | memoryview, addr: Address, now: float
    ) -> None:
        """Process one UDP payload from ``addr``; never raises for bad input."""
        self._now = now
        try:
            packet = Packet.parse(data)
        except ParseError:
            return
        assoc = self._by_addr.get((addr, packet.source_port))
        if assoc is None:
            assoc = self._rebound(packet, addr)
        if assoc is not None and packet.destination_port == self.local_port:
            assoc.receive_packet(packet, now)  # marks it dirty
            self._ready[assoc] = None
            return
        self._unmatched(packet, addr, now)

    def peer_unreachable(
        self, quoted: bytes | bytearray | memoryview, addr: Address
    ) -> Association | None:
        """An ICMP Port Unreachable for a packet we sent to ``addr``, quoting its start
        (``quoted``): handed to the association it names, which believes it only if the
        tags match (:meth:`Association.peer_unreachable`).

        Returns:
            The association that ended, or ``None`` if the message was ignored.
        """
        assoc = self._sender_of(quoted, addr)
        if assoc is None or not assoc.peer_unreachable(quoted):
            return None
        self._ready[assoc] = None
        return assoc

    def datagram_refused(
        self, datagram: bytes | bytearray | memoryview, addr: Address, now: float
    ) -> Association | None:
        """The local stack refused to send ``datagram`` to ``addr`` as too big
        (``EMSGSIZE``): news for path MTU discovery of the association that sent it
        (:meth:`Association.datagram_refused`), which it then retransmits as usual.

        Returns:
            That association, or ``None`` if the datagram names none of ours.
        """
        assoc = self._sender_of(datagram, addr)
        if assoc is None or not assoc.datagram_refused(datagram, now):
            return None
        return assoc

    def packet_too_big(
        self, quoted: bytes | bytearray | memoryview, addr: Address, mtu: int, now: float
    ) -> Association | None:
        """An ICMP Packet Too Big (next-hop MTU ``mtu``) for a packet we sent to
        ``addr``, quoting its start: a hint for the path MTU discovery of the
        association it names (:meth:`Association.packet_too_big`).

        Returns:
            That association, or ``None`` if the message was not tied to one.
        """
        assoc = self._sender_of(quoted, addr)
        if assoc is None or not assoc.packet_too_big(quoted, mtu, now):
            return None
        return assoc

    def _sender_of(
        self, packet: bytes | bytearray | memoryview, addr: Address
    ) -> Association | None:
        """Our association to ``addr`` whose ports the start of ``packet`` (one we
        sent) names."""
        if len(packet) < 4:
            return None
        source = int.from_bytes(packet[0:2], "big")
        destination = int.from_bytes(packet[2:4], "big")
        if source != self.local_port:
            return None
        return self._by_addr.get((addr, destination))

    def _rebound(self, packet: Packet, addr: Address) -> Association | None:
        """RFC 6951, Section 5.4: the same peer host, a new UDP port."""
        tag = packet.verification_tag
        if not tag or not isinstance(addr, tuple) or not addr:
            return None
        assoc = self._by_tag.get(tag)
        if assoc is None or assoc.closed or assoc.remote_port != packet.source_port:
            return None
        old_addr = self._addr.get(assoc)
        if not isinstance(old_addr, tuple) or old_addr[:1] != addr[:1]:
            return None
        if self._by_addr.get((old_addr, assoc.remote_port)) is assoc:
            del self._by_addr[(old_addr, assoc.remote_port)]
        self._register(assoc, addr)
        return assoc

    def _unmatched(self, packet: Packet, addr: Address, now: float) -> None:
        chunks = packet.chunks
        if not chunks or packet.destination_port != self.local_port:
            self._reply(ootb_response(packet), addr)
            return
        first = leading_chunk(chunks)  # an authenticated COOKIE ECHO follows an AUTH
        until = self._linger.get(packet.verification_tag)
        if until is not None and now <= until:
            if isinstance(first, ShutdownAckChunk):
                self._reply(ootb_response(packet), addr)
            return
        if isinstance(first, InitChunk):
            if self.accept and len(chunks) == 1:
                self._answer_init(packet, first, addr, now)
            return
        if isinstance(first, CookieEchoChunk):
            self._answer_cookie(packet, first, addr, now)
            return
        self._reply(ootb_response(packet), addr)

    def _reply(self, packet: Packet | None, addr: Address) -> None:
        if packet is not None:
            self._out.append((bytes(packet), addr))

    def _answer_init(self, packet: Packet, init: InitChunk, addr: Address, now: float) -> None:
        """Section 5.1, B: answer statelessly, everything in the cookie."""
        if packet.verification_tag != 0 or init.initiate_tag == 0:
            return
        problem = init_problem(init, self.config)
        if problem is not None:
            self._reply(abort_init(init, packet, problem), addr)
            return
        ack = build_init_ack(
            self.config,
            init,
            now=now,
            local_tag=self._rng.randrange(1, 1 << 32),
            local_tsn=self._rng.getrandbits(32),
            local_port=self.local_port,
            peer_port=packet.source_port,
            secret=self._secret,
            context=_context(addr),
        )
        self._reply(Packet(self.local_port, packet.source_port, init.initiate_tag, [ack]), addr)

    def _answer_cookie(
        self, packet: Packet, echo: CookieEchoChunk, addr: Address, now: float
    ) -> None:
        """Section 5.1.5: only a valid cookie makes an association."""
        cookie = CookieState.open(echo.cookie, self._secret, _context(addr))
        if cookie is None or cookie.local_tag != packet.verification_tag:
            return
        assoc = self._new_association(addr, packet.source_port)
        assoc.receive_packet(packet, now)
        if assoc.closed:
            # Stale: the association queued the Stale Cookie ERROR; send it, keep nothing.
            for datagram in assoc.datagrams_to_send(now):
                self._out.append((datagram, addr))
            return
        self._events.append((assoc, AssociationAccepted()))
        self._register(assoc, addr)

    # -- outgoing, events, timers ----------------------------------------------------

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        """Every packet to send now, with the address to send it to. Visits only the
        associations fed since the last call (the others have nothing new)."""
        self._now = now
        out = self._out
        self._out = []
        dirty = self._dirty
        self._dirty = {}
        for assoc in dirty:
            addr = self._addr.get(assoc)
            if addr is None:
                continue  # forgotten meanwhile
            for datagram in assoc.datagrams_to_send(now):
                out.append((datagram, addr))
            self._timers.set(assoc, assoc.timer_deadline())
            if assoc.has_events:
                self._ready[assoc] = None
            elif assoc.closed:
                self._forget(assoc)
        return out

    def next_event(self) -> tuple[Association, Event] | None:
        """The next ``(association, event)``; a new association's first event is
        :class:`AssociationAccepted`, then its ``AssociationUp``."""
        if self._events:
            return self._events.popleft()
        while self._ready:
            assoc = next(iter(self._ready))
            event = assoc.next_event()
            if event is not None:
                return assoc, event
            del self._ready[assoc]
            if assoc.closed and not assoc.has_datagrams:
                self._forget(assoc)
        return None

    def _forget(self, assoc: Association) -> None:
        linger = self._linger
        while linger:
            tag, until = next(iter(linger.items()))
            if until >= self._now:
                break
            del linger[tag]
        linger.pop(assoc.verification_tag, None)
        linger[assoc.verification_tag] = self._now + LINGER
        addr = self._addr.pop(assoc, None)
        if addr is not None and self._by_addr.get((addr, assoc.remote_port)) is assoc:
            del self._by_addr[(addr, assoc.remote_port)]
        if self._by_tag.get(assoc.verification_tag) is assoc:
            del self._by_tag[assoc.verification_tag]
        self._ready.pop(assoc, None)
        self._dirty.pop(assoc, None)
        self._timers.discard(assoc)
        assoc._watcher = None

    def _refresh_deadlines(self) -> None:
        """Re-read the deadlines of the associations fed since the last flush."""
        timers = self._timers
        for assoc in self._dirty:
            if assoc in self._addr:
                timers.set(assoc, assoc.timer_deadline())

    def timer_deadline(self) -> float | None:
        """The earliest deadline of any association, or ``None``."""
        if self._dirty:
            self._refresh_deadlines()
        return self._timers.earliest()

    def handle_timer(self, now: float) -> None:
        """Run the expired timers of every association (only those are visited)."""
        self._now = now
        if self._dirty:
            self._refresh_deadlines()
        for assoc in self._timers.pop_due(now):
            if assoc in self._addr:
                assoc.handle_timer(now)  # marks it dirty: its new deadline is read later
                self._ready[assoc] = None
