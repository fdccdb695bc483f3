"""The UDP socket driver of SCTP over UDP (RFC 6951): sockets shared by endpoints, and
the pump that feeds them to the sans-IO core.

Theory of operation
===================

The protocol lives in :mod:`trio_sctls.sctp` (an :class:`~trio_sctls.sctp.Endpoint` per
local SCTP port, fed datagrams and a clock). This module owns the I/O around it: UDP
sockets, the clock, and the dispatch of the core's events to the transports
(:mod:`._transport`) and listeners (:mod:`._listener`). Measurements behind the shape
are in ``docs/transports.md``.

Sockets and endpoints. One UDP socket serves any number of SCTP endpoints, told apart by
the destination SCTP port in the common header, and each endpoint any number of
associations (the core demultiplexes by peer address, SCTP port and verification tag).
That is how a kernel does it: all of Linux's SCTP-over-UDP traffic goes through one UDP
port. Sockets are shared within one Trio run through a registry keyed by (family, bound
address, UDP port): two servers in one process on the default UDP port 9899 share one
socket and differ in their SCTP ports, so nothing clashes. ``udp_port=0`` asks for a
socket of one's own on an ephemeral port, which is what a client gets by default
(Linux answers the port an INIT came from). A socket is closed when its last user is
gone. Across processes, two binds of one UDP port clash (``EADDRINUSE``), as they
would for any UDP service; pick another ``udp_port`` (or 0) there.

Structured concurrency. Reading a socket and running timers needs tasks, and no task
may outlive the ``async with`` that started it, so every user of a socket (each
:func:`open_udp_transport` / :func:`open_udp_listener`) runs a *pump* in a nursery of
its own. Only one pump per socket is active: they queue on a lock, and when the active
one's owner leaves (its pump is cancelled, always at an ``await``, between two whole
steps of the core) the next one carries on. Everything the pump needs lives on the
socket object, not in its tasks, so the hand-over loses nothing.

A pump is two tasks. The *reader* waits until the socket is readable, then, without
awaiting, reads every datagram waiting (a burst, at most ``MAX_BURST``), feeds each to
its endpoint, hands the core's events to the transports, and sends what the core wants
sent: ``datagrams_to_send`` once per burst, not once per datagram, so acknowledgements
and data bundle into few packets. The core only *decides* while it is fed that a SACK
is due (every second DATA packet, a gap, a duplicate, a window update: RFC 9260,
Section 6.2) and builds it when collected, so a burst is answered by one SACK, sent
before the reader waits again. System calls are batched too (:mod:`._batch`): with
``UDP_GRO`` one read may bring many datagrams, coalesced by the kernel and split here,
and a flush sends each train of equal-size packets to one peer in one ``sendmsg``
(``UDP_SEGMENT``); on a 1500-byte path that is about six times fewer calls per byte.
The *flusher* sleeps until the earliest timer of any association or until someone asks
for a flush. The application's calls (send, read, reset, close) change the core
directly and then ask for a flush; messages queued by several tasks in one scheduling
round thus leave together, packed into packets up to the path MTU. The flusher parks
on a :class:`trio.lowlevel.ParkingLot` with the timer as the deadline of the scope
around it (lowered whenever the core's next deadline moves earlier). Only ``abort()``
sends at once, synchronously, because it must work when no pump will run again.

Failure containment. A datagram that fails to parse or to match anything is dropped or
answered by the core per RFC 9260, Section 8.4; a datagram to an SCTP port nobody
listens on gets an ABORT (Section 8.4 (3)), as Linux answers. No error from the network
or from processing one datagram can stop the pump: each datagram is handled inside its
own ``try``, so a bug triggered by one peer costs that datagram, not the other
associations on the socket. Socket errors are logged and the pump goes on; SCTP
retransmits what a full send buffer dropped.

Dead peers. A userspace peer that dies leaves no kernel behind to send ABORT, only a
closed UDP port. The next packet we send there (a heartbeat, HB.interval after the last
traffic at the latest) comes back as an ICMP port unreachable, which RFC 6951, Section
5.5 says to treat as the peer's ABORT. Every socket asks for ICMP errors
(``IP_RECVERR``, ``IPV6_RECVERR``), connected or not; they wake the reader (epoll
reports ``EPOLLERR``), which reads them from the error queue (``MSG_ERRQUEUE``) with
the datagram they quote and its original destination. ICMP is trivially forged, so it
counts only when it can be tied to one association (RFC 9260, Appendix C): the quoted
packet's destination address and SCTP ports name it, and its verification tag must be
the peer's (or, for an unanswered INIT, its Initiate Tag ours), which nobody off the
path knows. Everything else is counted (``icmp_ignored``) and dropped. A peer that
drops everything instead is found by heartbeats and retransmissions going unanswered
(``silent_peer_timeout`` in ``_transport`` gives the bound).

Hazards. Datagram bursts larger than the socket's receive buffer are dropped by the
kernel before we see them, so the buffers are enlarged (``SOCKET_BUFFER``; the forced
variant needs privileges, the plain one is capped by ``net.core.rmem_max``).

Scale. Nothing here or in the core visits every association or every endpoint: the pump
keeps the endpoints with work (a datagram, a timer, or an association the application
fed, reported through ``Endpoint.wakeup``) and flushes and dispatches only those, and it
keeps each endpoint's next deadline in a heap (``sctp.Deadlines``), as each endpoint does
for its associations. An idle association costs its memory and its heartbeats (one
HEARTBEAT and one HEARTBEAT ACK per HB.interval, 30 s, at each end), nothing per event
elsewhere. By default each client has a socket of its own (one file descriptor and a
reader task per association); clients given one fixed ``udp_port`` share a socket and
one pump instead (``benchmarks/scale.py`` measures both).
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import math
import random
import socket
import struct
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Final, final

import trio

from ..._util import unwrap_single_exception
from ...sctp import (
    Association,
    AssociationAccepted,
    Deadlines,
    Endpoint,
    Fragmentable,
    InitChunk,
    MessageReceived,
    Packet,
    ParseError,
    SCTPConfig,
    abort_init,
    ootb_response,
)
from ._batch import (
    GRO_ANCILLARY,
    SocketAddress,
    TrainSender,
    enable_gro,
    received_size,
    split,
)
from ._icmp import (
    ERROR_ANCILLARY,
    ICMP_ERRNOS,
    MSG_ERRQUEUE,
    QUOTED_SIZE,
    enable_icmp_errors,
    packet_too_big,
    port_unreachable,
)
from ._pmtu import enable_probing, send_fragmentable, tell_core

if TYPE_CHECKING:
    from ._listener import UDPListener
    from ._transport import UDPTransport

log = logging.getLogger("trio_sctls.udp")

#: The ceiling of path MTU discovery (RFC 8899, in the core): the largest IP packet.
#: Each association starts at 1200 bytes of SCTP packet and probes upward, capped by
#: the MTU of the interface towards the peer where the kernel says (``_pmtu``): so
#: loopback comes out near 64 KiB, Ethernet at 1500, jumbo frames at 9000. Big packets
#: mean few system calls and few chunks parsed per byte.
DEFAULT_MTU: Final = 65535
#: The same ceiling: loopback paths are discovered like any other now (this was the
#: address-based guess for them).
LOOPBACK_MTU: Final = DEFAULT_MTU
_CORE_DEFAULTS = SCTPConfig()
#: Loopback round trips take microseconds, but a busy event loop (TLS handshakes) may
#: answer late: RTO.Min of 200 ms (as Linux's TCP) instead of RFC 9260's 1 s keeps one
#: lost packet from costing a second, without retransmitting spuriously.
LOOPBACK_RTO_MIN: Final = 0.2
LOOPBACK_RTO_INITIAL: Final = 0.5
#: Bytes we may queue (sent or not) without acknowledgement before senders wait.
SEND_BUFFER: Final = 1024 * 1024
#: Our receive window (the a_rwnd we advertise) when nothing is waiting to be read;
#: raised to ``max_message_size`` when that is larger (no partial delivery).
RECEIVE_BUFFER: Final = 1024 * 1024
#: Kernel socket buffers we ask for: a window's worth of 64 KB datagrams must fit, or
#: loopback bursts are dropped before we read them.
SOCKET_BUFFER: Final = 8 * 1024 * 1024
#: Largest UDP payload we can receive.
RECEIVE_SIZE: Final = 65536
#: Datagrams handled before events are dispatched and replies flushed (a bound on the
#: work between two checkpoints, so other tasks and sockets get their turn).
MAX_BURST: Final = 64
#: Seconds :meth:`UDPTransport.aclose` waits for the SHUTDOWN sequence before aborting.
GRACEFUL_CLOSE_TIMEOUT: Final = 10.0
#: Established associations a listener holds for :meth:`UDPListener.accept`.
DEFAULT_BACKLOG: Final = 128
#: SCTP ports picked for port 0: IANA's dynamic range.
_EPHEMERAL = (49152, 65535)

_PORTS = struct.Struct("!HH")


# -- sockets ------------------------------------------------------------------------------


def _is_loopback(host: str) -> bool:
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host == "localhost"
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def _plain(address: SocketAddress) -> tuple[str, int]:
    """``(host, port)``, with IPv4-mapped IPv6 addresses shown as IPv4."""
    host, port = address[0], address[1]
    if host.startswith("::ffff:") and "." in host:
        host = host[7:]
    return host, port


def _set_buffer(sock: socket.socket, forced: int | None, plain: int) -> None:
    """Ask for ``SOCKET_BUFFER`` bytes: the forced variant (Linux, privileged) first."""
    for option in (forced, plain):
        if option is None:
            continue
        try:
            sock.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER)
        except OSError:
            continue
        return


async def _resolve(host: str, port: int) -> tuple[int, SocketAddress]:
    """The first address of ``host`` for UDP: ``(family, sockaddr)``."""
    infos = await trio.socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    if not infos:  # pragma: no cover - getaddrinfo raises instead
        raise OSError(errno.EHOSTUNREACH, f"no address for {host!r}")
    family, _type, _proto, _name, sockaddr = infos[0]
    return int(family), sockaddr  # type: ignore[return-value]


def _dual_stack() -> bool:
    """Whether an IPv6 socket that also takes IPv4 can be made here."""
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
            probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    except OSError:
        return False
    return True


def _first(hosts: str | Sequence[str] | None) -> str | None:
    """One address from a host or list of hosts: SCTP over one UDP socket has one path."""
    if hosts is None or isinstance(hosts, str):
        return hosts
    if not hosts:
        return None
    if len(hosts) > 1:
        log.debug("udp transport: multihoming is not supported; using %r only", hosts[0])
    return hosts[0]


@final
class _UDPSocket(TrainSender):
    """One UDP socket and the SCTP endpoints on it: the driver (see the module docs)."""

    def __init__(self, sock: socket.socket, key: tuple[int, str, int] | None) -> None:
        super().__init__(sock)
        self.key = key
        host, port = sock.getsockname()[:2]
        self.address: tuple[str, int] = (host, port)
        self.users = 0
        self.endpoints: dict[int, Endpoint] = {}
        self.listeners: dict[Endpoint, UDPListener] = {}
        self.transports: dict[Association, UDPTransport] = {}
        #: Transports with senders waiting for room in the send buffer.
        self.blocked: set[UDPTransport] = set()
        self._pump_lock = trio.Lock()
        self._flush_wanted = trio.lowlevel.ParkingLot()
        self._timer_scope: trio.CancelScope | None = None
        self._dirty = False
        self._deadline = math.inf
        #: Endpoints with something to dispatch or flush: fed a datagram, a timer, or
        #: woken by one of their associations (``Endpoint.wakeup``). Flushes and event
        #: dispatch visit only these, not every endpoint on the socket.
        self._busy: dict[Endpoint, None] = {}
        #: Inside a step of the pump that ends with a flush (see ``_woken``).
        self._pumping = False
        #: The next deadline of each endpoint.
        self._timers: Deadlines[Endpoint] = Deadlines()
        #: Datagrams received on this socket, and the system calls that read them
        #: (statistics: with ``UDP_GRO`` one call may carry many).
        self.datagrams_received = 0
        self.receive_calls = 0
        #: Whether coalesced datagrams come in (``UDP_GRO``): see :mod:`._batch`.
        self.gro = enable_gro(sock)
        #: Whether ICMP errors are queued for us to read (IP_RECVERR).
        self.icmp_errors = enable_icmp_errors(sock, sock.family)
        #: ICMP port unreachables that ended an association, and ICMP errors ignored
        #: (another kind, or not tied to an association by its tags: maybe forged).
        self.icmp_aborts = 0
        self.icmp_ignored = 0

    @classmethod
    def bind(
        cls, family: int, host: str, port: int, *, connect_to: SocketAddress | None = None
    ) -> _UDPSocket:
        """A new non-blocking UDP socket bound to ``host``:``port`` (and connected to
        ``connect_to``, for a client's own socket)."""
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            if family == socket.AF_INET6 and host == "::":
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            _set_buffer(sock, getattr(socket, "SO_RCVBUFFORCE", None), socket.SO_RCVBUF)
            _set_buffer(sock, getattr(socket, "SO_SNDBUFFORCE", None), socket.SO_SNDBUF)
            try:
                sock.bind((host, port))
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE:
                    raise
                raise OSError(
                    errno.EADDRINUSE,
                    f"UDP port {port} at {host} is already in use (another process or "
                    "socket has it): pass another udp_port, or udp_port=0 for a free one",
                ) from None
            if connect_to is not None:
                # A client's own socket talks to one peer: connecting it filters what
                # arrives and reports an ICMP port unreachable as ECONNREFUSED, so a
                # client to a closed UDP port fails at once instead of after minutes.
                sock.connect(connect_to)
            sock.setblocking(False)
            enable_probing(sock)  # DF on, for path MTU probes (see _pmtu)
        except BaseException:
            sock.close()
            raise
        key = None if connect_to is not None else (family, host, int(sock.getsockname()[1]))
        return cls(sock, key)

    # -- endpoints ---------------------------------------------------------------------

    def free_sctp_port(self, preferred: int) -> int:
        """An SCTP port no endpoint on this socket uses, ``preferred`` if it is free."""
        if preferred and preferred not in self.endpoints:
            return preferred
        for _ in range(1000):
            port = random.randint(*_EPHEMERAL)
            if port not in self.endpoints:
                return port
        raise OSError(errno.EADDRINUSE, "no free SCTP port on this UDP socket")

    def add_endpoint(self, endpoint: Endpoint) -> None:
        """Route datagrams for ``endpoint``'s SCTP port to it."""
        if endpoint.local_port in self.endpoints:
            raise OSError(
                errno.EADDRINUSE,
                f"SCTP port {endpoint.local_port} is already in use on UDP port {self.address[1]}",
            )
        self.endpoints[endpoint.local_port] = endpoint
        endpoint.wakeup = self._woken
        self._busy[endpoint] = None

    def _woken(self, endpoint: Endpoint) -> None:
        """One of ``endpoint``'s associations was fed (by the application, or by the
        pump itself, which flushes at the end of its step anyway)."""
        self._busy[endpoint] = None
        if not self._pumping:
            self.request_flush()

    def remove_endpoint(self, endpoint: Endpoint) -> None:
        """Abort what is left of ``endpoint``'s associations, send that, forget it."""
        now = trio.current_time()
        for assoc in endpoint.associations:
            transport = self.transports.get(assoc)
            if transport is not None:
                transport.abort("the endpoint closed")
            elif not assoc.closed:
                assoc.abort("the endpoint closed")
        self.flush_now(now)
        if self.endpoints.get(endpoint.local_port) is endpoint:
            del self.endpoints[endpoint.local_port]
        self.listeners.pop(endpoint, None)
        endpoint.wakeup = None
        self._busy.pop(endpoint, None)
        self._timers.discard(endpoint)

    # -- the pump ------------------------------------------------------------------------

    async def pump(self) -> None:
        """Run the driver while this task holds the socket's pump lock: a reader task
        for input, and this task for timers and flush requests."""
        async with self._pump_lock, trio.open_nursery() as nursery:
            nursery.start_soon(self._reader)
            await self._timers_and_flushes()

    async def _reader(self) -> None:
        sock = self.sock
        while True:
            try:
                await trio.lowlevel.wait_readable(sock)
            except trio.ClosedResourceError:
                if not self._closed:
                    raise
                # vanish(): nothing more to read, and the owners leave in their time.
                await trio.sleep_forever()
            if self._closed:  # vanish() ran after our wake-up was scheduled: as above
                await trio.sleep_forever()
            now = trio.current_time()
            self._pumping = True
            try:
                self._read_burst(now)
                self._dispatch()
            except Exception:  # pragma: no cover - a bug in the core; serve the others
                log.exception("udp transport: error while processing input")
            finally:
                self._pumping = False
            self.flush_now(now)

    async def _timers_and_flushes(self) -> None:
        # Woken through a parking lot (no exception thrown, unlike cancelling a scope);
        # the timer is a deadline on the scope around the park, lowered in flush_now
        # whenever the core's next deadline moves earlier.
        while True:
            if not self._dirty:
                with trio.CancelScope(deadline=self._deadline) as scope:
                    self._timer_scope = scope
                    try:
                        await self._flush_wanted.park()
                    finally:
                        self._timer_scope = None
            now = trio.current_time()
            if now >= self._deadline:
                self._pumping = True
                try:
                    for endpoint in self._timers.pop_due(now):
                        self._busy[endpoint] = None
                        endpoint.handle_timer(now)
                    self._dispatch()
                except Exception:  # pragma: no cover - a bug in the core
                    log.exception("udp transport: error while running timers")
                finally:
                    self._pumping = False
            self.flush_now(now)
            await trio.lowlevel.checkpoint()

    def request_flush(self) -> None:
        """Have the pump send what the core wants sent, soon (batched)."""
        if not self._dirty:
            self._dirty = True
            self._flush_wanted.unpark_all()

    def _read_burst(self, now: float) -> None:
        sock = self.sock
        gro = self.gro
        received = 0
        for count in range(MAX_BURST):
            try:
                if gro:
                    data, ancillary, flags, address = sock.recvmsg(RECEIVE_SIZE, GRO_ANCILLARY)
                else:
                    data, address = sock.recvfrom(RECEIVE_SIZE)
            except BlockingIOError:
                if count == 0 and self.icmp_errors:
                    # Woken with nothing to read: the error queue (epoll says EPOLLERR
                    # while it holds anything, even after a sendto took the error).
                    self._read_errors()
                return
            except ConnectionRefusedError:
                # The socket's pending error, from an ICMP port unreachable.
                if self.icmp_errors:
                    self._read_errors()
                else:
                    self._refused()
                continue
            except OSError as exc:
                # Other ICMP errors (host or network unreachable...) arrive this way:
                # the path may recover, and SCTP's timers judge it. Anything else is
                # unexpected, but the next datagram may be fine.
                level = logging.DEBUG if exc.errno in ICMP_ERRNOS else logging.WARNING
                log.log(level, "udp transport: recvfrom on %r failed: %r", self.address, exc)
                if self.icmp_errors:
                    self._read_errors()
                return
            self.receive_calls += 1
            if gro and ancillary:  # several datagrams, coalesced by the kernel
                datagrams = split(data, received_size(ancillary), bool(flags & socket.MSG_TRUNC))
                for datagram in datagrams:
                    self._received(datagram, address, now)
                received += len(datagrams)
            else:
                self._received(data, address, now)
                received += 1
            if received >= MAX_BURST:
                return

    def _received(self, data: bytes, address: SocketAddress, now: float) -> None:
        """Feed one datagram to its endpoint."""
        self.datagrams_received += 1
        if len(data) < 12:
            return  # not even a common header: not SCTP
        _src, dst = _PORTS.unpack_from(data)
        endpoint = self.endpoints.get(dst)
        try:
            if endpoint is not None:
                self._busy[endpoint] = None
                endpoint.receive_datagram(data, address, now)
            else:
                self._no_endpoint(data, address)
        except Exception:  # pragma: no cover - a bug in the core: drop this datagram
            log.exception("udp transport: datagram from %r could not be processed", address)

    def _no_endpoint(self, data: bytes, address: SocketAddress) -> None:
        """RFC 9260, Section 8.4: nobody has this SCTP port here."""
        try:
            packet = Packet.parse(data)
        except ParseError:
            return
        if not packet.chunks:
            return
        first = packet.chunks[0]
        if isinstance(first, InitChunk):
            # (3): refuse with the INIT's own Initiate Tag, T bit clear, as Linux does
            # for a port with no listener; the client fails at once.
            if packet.verification_tag == 0 and first.initiate_tag != 0:
                self._send(bytes(abort_init(first, packet, None)), address)
            return
        answer = ootb_response(packet)
        if answer is not None:
            self._send(bytes(answer), address)

    def _read_errors(self) -> None:
        """Read the ICMP errors queued on the socket (at most a burst of them)."""
        for _ in range(MAX_BURST):
            try:
                quoted, ancillary, _flags, address = self.sock.recvmsg(
                    QUOTED_SIZE, ERROR_ANCILLARY, MSG_ERRQUEUE
                )
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.debug("udp transport: reading the error queue failed: %r", exc)
                return
            self._icmp_error(quoted, ancillary, address)

    def _icmp_error(
        self, quoted: bytes, ancillary: list[tuple[int, int, bytes]], address: SocketAddress
    ) -> None:
        """RFC 6951, Section 5.5: a port unreachable for a packet we sent to
        ``address`` ends the association it can be tied to, by the quoted packet's
        ports and verification tag (``Endpoint.peer_unreachable``), as the peer's
        ABORT would. Anything else is counted and ignored."""
        mtu = packet_too_big(ancillary)
        if mtu is not None:  # a hint for path MTU discovery, not the end of anything
            if not self._too_big(quoted, address, mtu):
                self.icmp_ignored += 1
            return
        endpoint = None
        if port_unreachable(ancillary) and len(quoted) >= 4 and address:
            endpoint = self.endpoints.get(_PORTS.unpack_from(quoted)[0])
        assoc = endpoint.peer_unreachable(quoted, address) if endpoint is not None else None
        if endpoint is None or assoc is None:
            self.icmp_ignored += 1
            return
        self.icmp_aborts += 1
        self._busy[endpoint] = None
        transport = self.transports.get(assoc)
        if transport is not None:
            transport._port_unreachable()

    def _refused(self) -> None:
        """ICMP port unreachable on a connected client socket where the error queue is
        not available: nobody listens there (only believed while connecting)."""
        for transport in list(self.transports.values()):
            transport._connect_refused()

    def _dispatch(self) -> None:
        for endpoint in list(self._busy):
            if self.endpoints.get(endpoint.local_port) is not endpoint:
                continue
            while (item := endpoint.next_event()) is not None:
                assoc, event = item
                transport = self.transports.get(assoc)
                if transport is not None:
                    transport._on_event(event)
                elif type(event) is AssociationAccepted:
                    listener = self.listeners.get(endpoint)
                    if listener is None:
                        assoc.abort()
                    else:
                        self.transports[assoc] = listener._incoming(assoc)
                elif type(event) is MessageReceived:
                    assoc.consumed(len(event.data))

    def flush_now(self, now: float) -> None:
        """Send everything the busy endpoints have queued; recompute the next deadline.
        An endpoint with events still to dispatch stays busy for the next dispatch."""
        self._dirty = False
        busy = self._busy
        self._busy = {}
        timers = self._timers
        endpoints = self.endpoints
        outgoing: list[tuple[bytes, SocketAddress]] = []
        for endpoint in busy:
            if endpoints.get(endpoint.local_port) is not endpoint:
                continue
            try:
                outgoing += endpoint.datagrams_to_send(now)  # type: ignore[arg-type]
                timers.set(endpoint, endpoint.timer_deadline())
            except Exception:  # pragma: no cover - a bug in the core; serve the others
                log.exception("udp transport: error while collecting datagrams")
            if endpoint.has_events:
                self._busy[endpoint] = None
        if outgoing:
            self._send_all(outgoing)
        earliest = timers.earliest()
        deadline = math.inf if earliest is None else earliest
        self._deadline = deadline
        scope = self._timer_scope
        if scope is not None and deadline < scope.deadline:
            scope.deadline = deadline
        if self.blocked:
            for transport in list(self.blocked):
                transport._wake_senders()

    def _send(self, data: bytes, address: SocketAddress) -> None:
        # One datagram: DATA cut before the path shrank goes with fragmentation allowed,
        # and our own EMSGSIZE is news for path MTU discovery.
        self.datagrams_sent += 1
        try:
            if type(data) is Fragmentable:
                send_fragmentable(self.sock, data, address)
            else:
                self.sock.sendto(data, address)
        except OSError as exc:
            if exc.errno == errno.EMSGSIZE and not self._closed:
                self._too_big(data, address, None)
            self._send_failed(exc, address, 1)
            return
        self.send_calls += 1

    def _too_big(self, packet: bytes, address: SocketAddress, mtu: int | None) -> bool:
        """News for the path MTU discovery of the association that sent ``packet``: an
        ICMP Packet Too Big quoting it (next-hop ``mtu``), or, with ``mtu`` None, our
        own ``EMSGSIZE`` for it. Returns whether an association took it."""
        endpoint = tell_core(self.endpoints, packet, address, mtu, trio.current_time())
        if endpoint is not None:
            self._busy[endpoint] = None
            self.request_flush()
        return endpoint is not None

    def vanish(self) -> None:
        """Close the socket now and send nothing more, as a killed process would
        (no ABORT, no SHUTDOWN): how tests make a peer die. Its peers learn it from the
        ICMP port unreachable that their next packet meets; its users find it closed
        when they leave."""
        registry = _registry()
        if self.key is not None and registry.get(self.key) is self:
            del registry[self.key]  # a new user of this port gets a new socket
        self.close()

    def close(self) -> None:
        """Close the socket (its last user is gone)."""
        if not self._closed:
            self._closed = True
            trio.lowlevel.notify_closing(self.sock)
            self.sock.close()


_SOCKETS: trio.lowlevel.RunVar[dict[tuple[int, str, int], _UDPSocket]] = trio.lowlevel.RunVar(
    "trio_sctls_udp_sockets"
)


def _registry() -> dict[tuple[int, str, int], _UDPSocket]:
    try:
        return _SOCKETS.get()
    except LookupError:
        sockets: dict[tuple[int, str, int], _UDPSocket] = {}
        _SOCKETS.set(sockets)
        return sockets


@asynccontextmanager
async def _using_socket(
    family: int, host: str, port: int, *, connect_to: SocketAddress | None = None
) -> AsyncIterator[_UDPSocket]:
    """Share (or create) the UDP socket bound to ``host``:``port`` and pump it while the
    ``async with`` lasts."""
    registry = _registry()
    udp = registry.get((family, host, port)) if port and connect_to is None else None
    if udp is None:
        udp = _UDPSocket.bind(family, host, port, connect_to=connect_to)
        if udp.key is not None:
            registry[udp.key] = udp
    udp.users += 1
    try:
        with unwrap_single_exception():
            async with trio.open_nursery() as nursery:
                nursery.start_soon(udp.pump)
                try:
                    yield udp
                finally:
                    nursery.cancel_scope.cancel()
    finally:
        udp.users -= 1
        if udp.users == 0:
            if udp.key is not None and registry.get(udp.key) is udp:
                del registry[udp.key]
            udp.close()
