"""SCTP carried in UDP datagrams (RFC 6951): the Trio driver of the sans-IO core.

Theory of operation
===================

The protocol lives in :mod:`trio_sctls.sctp` (an :class:`~trio_sctls.sctp.Endpoint` per
local SCTP port, fed datagrams and a clock). This module is the I/O around it: UDP
sockets, the clock, and the :class:`~trio_sctls.transport.MessageTransport` interface.

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
and data bundle into few packets. The *flusher* sleeps until the earliest timer of any
association or until someone asks for a flush. The application's calls (send, read,
reset, close) change the core directly and then ask for a flush; messages queued by
several tasks in one scheduling round thus leave together, packed into packets up to
the path MTU. The flusher parks on a :class:`trio.lowlevel.ParkingLot` with the timer as
the deadline of the scope around it (lowered whenever the core's next deadline moves
earlier). A first version had one task wait for "readable or flush" and woke it by
cancelling its scope, which throws an exception into it on every wake-up; this shape,
with senders woken one at a time (below), measured about 15% faster. Flushing
synchronously in ``send_message`` instead was measured too: no clear difference, so the
batching shape stayed. Only ``abort()`` sends at once, synchronously, because it must
work when no pump will run again.

Where the time goes (TLS over this transport, 16 KiB records, loopback; see
``benchmarks/throughput.py``): about 40% in Trio's scheduler (each record crosses the
writer, the flusher, the peer's reader, the association's demultiplexer and the channel
reader), 20% in the sans-IO core, 10% here, the rest in TLS and system calls. Senders
blocked on a full send buffer are therefore woken one at a time (each wakes the next
while room remains) rather than all at once to find the room taken.

Flow control, end to end. The core runs with ``auto_consume=False``: a message counts
against our advertised receive window until the application takes it out of
:meth:`UDPTransport.receive`, so a peer whose data nobody reads is stopped by SCTP's
window, not by our memory. On the sending side :meth:`UDPTransport.send_message` waits
(through Trio) while more than ``SEND_BUFFER`` bytes are queued and not acknowledged.

Path MTU. Without ICMP (RFC 6951 says not to rely on it) there is no path MTU
discovery: associations with a loopback peer use ``LOOPBACK_MTU`` (big packets, few
system calls), anything else the core's conservative default. A server's endpoint has
one configuration for all of its peers, so its MTU follows the address it is bound to.

Failure containment. A datagram that fails to parse or to match anything is dropped or
answered by the core per RFC 9260, Section 8.4; a datagram to an SCTP port nobody
listens on gets an ABORT (Section 8.4 (3)), as Linux answers. No error from the network
or from processing one datagram can stop the pump: each datagram is handled inside its
own ``try``, so a bug triggered by one peer costs that datagram, not the other
associations on the socket. Socket errors are logged and the pump goes on; SCTP
retransmits what a full send buffer dropped.

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
from collections import deque
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import TYPE_CHECKING, Final, final

import trio

if TYPE_CHECKING:
    from .._options import TransportOptions

from .._errors import (
    AssociationAbortedError,
    AssociationError,
    AssociationLostError,
    RemoteProtocolError,
)
from .._util import unwrap_single_exception
from ..sctp import (
    SCTP_UDP_PORT,
    Association,
    AssociationAborted,
    AssociationAccepted,
    AssociationLost,
    AssociationUp,
    Deadlines,
    Endpoint,
    InitChunk,
    LocalProtocolError,
    MessageReceived,
    Packet,
    ParseError,
    PeerError,
    SCTPConfig,
    StreamResetFailed,
    StreamsReset,
    abort_init,
    ootb_response,
)
from ..sctp import Event as SCTPEvent
from ..sctp import ShutdownComplete as SCTPShutdownComplete
from ..sctp import ShutdownReceived as SCTPShutdownReceived
from ._base import (
    DEFAULT_MAX_MESSAGE_SIZE,
    MIN_MAX_MESSAGE_SIZE,
    Message,
    MessageListener,
    MessageTransport,
    Received,
    RemoteError,
    ShutdownReceived,
    StreamReset,
    TransportState,
)

log = logging.getLogger("trio_sctls.udp")

#: RFC 6951, Section 5.1: the IANA-registered UDP port of SCTP over UDP. Servers bind it
#: by default and clients send to it by default.
DEFAULT_UDP_PORT: int = SCTP_UDP_PORT
#: Path MTU with a loopback peer: the largest IPv4 datagram is 65535 bytes; stay clear
#: of it. Big packets mean few system calls and few chunks parsed per byte.
LOOPBACK_MTU: Final = 65000
_CORE_DEFAULTS = SCTPConfig()
#: Path MTU elsewhere (no path MTU discovery without ICMP): the core's safe default.
DEFAULT_MTU: Final = _CORE_DEFAULTS.mtu
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
#: Datagrams handled before events are dispatched and replies flushed.
MAX_BURST: Final = 64
#: Seconds :meth:`UDPTransport.aclose` waits for the SHUTDOWN sequence before aborting.
GRACEFUL_CLOSE_TIMEOUT: Final = 10.0
#: Established associations a listener holds for :meth:`UDPListener.accept`.
DEFAULT_BACKLOG: Final = 128
#: SCTP ports picked for port 0: IANA's dynamic range.
_EPHEMERAL = (49152, 65535)

_PORTS = struct.Struct("!HH")

SocketAddress = tuple[str, int] | tuple[str, int, int, int]


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
class _UDPSocket:
    """One UDP socket and the SCTP endpoints on it: the driver (see the module docs)."""

    def __init__(self, sock: socket.socket, key: tuple[int, str, int] | None) -> None:
        self.sock = sock
        self.key = key
        host, port = sock.getsockname()[:2]
        self.address: tuple[str, int] = (host, port)
        self.users = 0
        self.endpoints: dict[int, Endpoint] = {}
        self.listeners: dict[Endpoint, UDPListener] = {}
        self.transports: dict[Association, UDPTransport] = {}
        #: Transports with senders waiting for room in the send buffer.
        self.blocked: set[UDPTransport] = set()
        #: Datagrams the kernel refused to send (full buffer): SCTP retransmits them.
        self.dropped_sends = 0
        self._pump_lock = trio.Lock()
        self._flush_wanted = trio.lowlevel.ParkingLot()
        self._timer_scope: trio.CancelScope | None = None
        self._dirty = False
        self._deadline = math.inf
        self._closed = False
        #: Endpoints with something to dispatch or flush: fed a datagram, a timer, or
        #: woken by one of their associations (``Endpoint.wakeup``). Flushes and event
        #: dispatch visit only these, not every endpoint on the socket.
        self._busy: dict[Endpoint, None] = {}
        #: Inside a step of the pump that ends with a flush (see ``_woken``).
        self._pumping = False
        #: The next deadline of each endpoint.
        self._timers: Deadlines[Endpoint] = Deadlines()
        #: Datagrams sent and received on this socket (statistics).
        self.datagrams_sent = 0
        self.datagrams_received = 0

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
            sock.bind((host, port))
            if connect_to is not None:
                # A client's own socket talks to one peer: connecting it filters what
                # arrives and reports an ICMP port unreachable as ECONNREFUSED, so a
                # client to a closed UDP port fails at once instead of after minutes.
                sock.connect(connect_to)
            sock.setblocking(False)
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
            await trio.lowlevel.wait_readable(sock)
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
        endpoints = self.endpoints
        busy = self._busy
        for _ in range(MAX_BURST):
            try:
                data, address = sock.recvfrom(RECEIVE_SIZE)
            except BlockingIOError:
                return
            except ConnectionRefusedError:
                self._refused()
                continue
            except OSError as exc:
                log.debug("udp transport: recvfrom failed: %r", exc)
                return
            self.datagrams_received += 1
            if len(data) < 12:
                continue  # not even a common header: not SCTP
            _src, dst = _PORTS.unpack_from(data)
            endpoint = endpoints.get(dst)
            try:
                if endpoint is not None:
                    busy[endpoint] = None
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

    def _refused(self) -> None:
        """ICMP port unreachable on a connected client socket: nobody listens there."""
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
                        self.transports[assoc] = UDPTransport(self, endpoint, assoc, listener)
                elif type(event) is MessageReceived:
                    assoc.consumed(len(event.data))

    def flush_now(self, now: float) -> None:
        """Send everything the busy endpoints have queued; recompute the next deadline.
        An endpoint with events still to dispatch stays busy for the next dispatch."""
        self._dirty = False
        send = self._send
        busy = self._busy
        self._busy = {}
        timers = self._timers
        endpoints = self.endpoints
        for endpoint in busy:
            if endpoints.get(endpoint.local_port) is not endpoint:
                continue
            try:
                for data, address in endpoint.datagrams_to_send(now):
                    send(data, address)  # type: ignore[arg-type]
                timers.set(endpoint, endpoint.timer_deadline())
            except Exception:  # pragma: no cover - a bug in the core; serve the others
                log.exception("udp transport: error while collecting datagrams")
            if endpoint.has_events:
                self._busy[endpoint] = None
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
        self.datagrams_sent += 1
        try:
            self.sock.sendto(data, address)
        except (BlockingIOError, InterruptedError):
            # The send buffer is full: the datagram is lost, and SCTP retransmits it.
            self.dropped_sends += 1
        except OSError as exc:
            if self._closed:
                return
            self.dropped_sends += 1
            log.debug("udp transport: sendto %r failed: %r", address, exc)

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


# -- the transport --------------------------------------------------------------------


def _make_config(
    base: SCTPConfig | None,
    *,
    loopback: bool,
    family: int,
    outbound_streams: int,
    max_inbound_streams: int,
    max_message_size: int,
) -> SCTPConfig:
    if max_message_size < MIN_MAX_MESSAGE_SIZE:
        raise ValueError(
            f"max_message_size must be at least {MIN_MAX_MESSAGE_SIZE} (RFC 3436 section 3.2)"
        )
    if base is None:
        base = SCTPConfig(
            mtu=LOOPBACK_MTU if loopback else DEFAULT_MTU,
            ip_header_size=20 if family == socket.AF_INET else 40,
            rto_min=LOOPBACK_RTO_MIN if loopback else _CORE_DEFAULTS.rto_min,
            rto_initial=LOOPBACK_RTO_INITIAL if loopback else _CORE_DEFAULTS.rto_initial,
        )
    try:
        return replace(
            base,
            outbound_streams=outbound_streams,
            max_inbound_streams=max_inbound_streams,
            max_message_size=max_message_size,
            receive_buffer=max(base.receive_buffer, RECEIVE_BUFFER, max_message_size),
            auto_consume=False,
        )
    except LocalProtocolError as exc:
        raise ValueError(str(exc)) from None


@final
class UDPTransport(MessageTransport):
    """One SCTP association carried over UDP: the sans-IO core's association, driven by
    the pump of its UDP socket. Created by :func:`open_udp_transport` (client) or
    :meth:`UDPListener.accept` (server), never directly.

    Attributes:
        close_timeout: seconds :meth:`aclose` waits for the graceful SHUTDOWN to
            complete before it aborts instead (default :data:`GRACEFUL_CLOSE_TIMEOUT`).
        send_buffer: unacknowledged bytes above which :meth:`send_message` waits.
    """

    kind = "udp"

    def __init__(
        self,
        udp: _UDPSocket,
        endpoint: Endpoint,
        assoc: Association,
        listener: UDPListener | None = None,
    ) -> None:
        self._udp = udp
        self._endpoint = endpoint
        self._assoc = assoc
        self._listener = listener
        self._inbox: deque[Received] = deque()
        self._readers = trio.lowlevel.ParkingLot()
        self._senders = trio.lowlevel.ParkingLot()
        self._settled = trio.Event()  # up, or failed before coming up
        self._done = trio.Event()  # the association is over
        self._max_message_size = assoc.config.max_message_size
        self._reconfig = False
        self._up = False
        self._connect_error: OSError | None = None
        self.close_timeout = GRACEFUL_CLOSE_TIMEOUT
        self.send_buffer = SEND_BUFFER

    def __repr__(self) -> str:
        state = self._assoc.state.value
        return f"<UDPTransport {self.local_addresses} -> {self.peer_addresses} {state}>"

    # -- properties --------------------------------------------------------------------

    @property
    def association(self) -> Association:
        """The sans-IO association underneath (read it; driving it is the pump's job)."""
        return self._assoc

    @property
    def udp_address(self) -> tuple[str, int]:
        """Our UDP address (the local encapsulation port)."""
        return _plain(self._udp.address)

    @property
    def peer_udp_address(self) -> tuple[str, int]:
        """The peer's UDP address, as last seen (RFC 6951, Section 5.4)."""
        try:
            return _plain(self._endpoint.address_of(self._assoc))  # type: ignore[arg-type]
        except KeyError:
            return ("", 0)

    @property
    def local_addresses(self) -> list[tuple[str, int]]:
        """Our address: the UDP socket's IP address and our SCTP port."""
        return [(self.udp_address[0], self._assoc.local_port)]

    @property
    def peer_addresses(self) -> list[tuple[str, int]]:
        """The peer's IP address and SCTP port (one path: no multihoming over UDP)."""
        host = self.peer_udp_address[0]
        return [(host, self._assoc.remote_port)] if host else []

    # -- events from the pump --------------------------------------------------------------

    def _on_event(self, event: SCTPEvent) -> None:
        if isinstance(event, MessageReceived):  # the common case first
            if self._state is TransportState.CLOSED:
                self._assoc.consumed(len(event.data))  # discarded: reopen the window
                return
            self._inbox.append(Message(event.data, event.stream, event.ppid, event.unordered))
            self._readers.unpark_all()
        elif isinstance(event, AssociationUp):
            self._outbound_streams = event.outbound_streams
            self._inbound_streams = event.inbound_streams
            self._reconfig = event.reconfig
            self._up = True
            self._settled.set()
            if self._listener is not None:
                self._listener._deliver(self)
        elif isinstance(event, SCTPShutdownReceived):
            self._peer_shut_down()
            self._inbox.append(ShutdownReceived())
            self._wake_all()
        elif isinstance(event, StreamsReset):
            if not event.outgoing and self._state is not TransportState.CLOSED:
                self._inbox.append(StreamReset(event.streams))
                self._readers.unpark_all()
        elif isinstance(event, PeerError):
            if event.causes and self._state is not TransportState.CLOSED:
                raw = b"".join(bytes(cause) for cause in event.causes)
                self._inbox.append(RemoteError(event.causes[0].cause_code, raw[4:]))
                self._readers.unpark_all()
        elif isinstance(event, SCTPShutdownComplete):
            self._finish(None)
        elif isinstance(event, AssociationAborted):
            if event.by_peer:
                detail = f": {event.reason}" if event.causes else ""
                error: AssociationError = AssociationAbortedError(
                    f"the peer aborted the association{detail}"
                )
            else:
                # Our core aborted: the peer broke the protocol (or a shutdown hung).
                error = RemoteProtocolError(f"aborted the association: {event.reason}")
            self._finish(error)
        elif isinstance(event, AssociationLost):
            self._finish(AssociationLostError(f"the association was lost: {event.reason}"))
        elif isinstance(event, StreamResetFailed):
            log.debug("udp transport: stream reset refused: %r", event)

    def _finish(self, error: AssociationError | None) -> None:
        """The association is over (gracefully when ``error`` is None)."""
        if self._done.is_set():
            return
        if error is not None:
            self._break(error)
        else:
            self._peer_shut_down()
        if not self._up and self._connect_error is None:
            reason = error.detail if error is not None else "the association closed"
            if isinstance(error, AssociationLostError):
                self._connect_error = TimeoutError(errno.ETIMEDOUT, reason)
            else:
                self._connect_error = ConnectionRefusedError(errno.ECONNREFUSED, reason)
        self._udp.transports.pop(self._assoc, None)
        self._udp.blocked.discard(self)
        self._done.set()
        self._settled.set()
        self._wake_all()

    def _connect_refused(self) -> None:
        if not self._up and not self._done.is_set():
            self._connect_error = ConnectionRefusedError(
                errno.ECONNREFUSED, "nothing listens on the peer's UDP port (ICMP)"
            )
            self._assoc.abort()
            self._finish(None)

    def _wake_all(self) -> None:
        self._readers.unpark_all()
        self._senders.unpark_all()

    def _wake_senders(self) -> None:
        # One at a time: each sender that finds room wakes the next (see send_message),
        # instead of every blocked sender waking to find the room taken.
        if not self._senders:
            self._udp.blocked.discard(self)
        elif self._has_room(1):
            self._senders.unpark()

    def _has_room(self, size: int) -> bool:
        queued = self._assoc.queued_bytes
        return queued == 0 or queued + size <= self.send_buffer

    # -- sending -------------------------------------------------------------------------

    async def _send(
        self, data: bytes | bytearray | memoryview, stream: int, ppid: int, unordered: bool
    ) -> None:
        # Waits while more than send_buffer bytes are unacknowledged.
        await trio.lowlevel.checkpoint_if_cancelled()
        self._check_status()
        size = len(data)
        if not self._has_room(size) or self._senders:
            # FIFO behind the senders already waiting.
            self._udp.blocked.add(self)
            await self._senders.park()
            self._check_status()
            while not self._has_room(size):
                # Re-register: a flush that ran while we were being woken may have
                # dropped this transport from ``blocked`` (it saw no parked sender).
                self._udp.blocked.add(self)
                await self._senders.park()
                self._check_status()
            if self._senders and self._has_room(1):
                self._senders.unpark()
        self._assoc.send(bytes(data), stream, ppid, unordered)
        self._udp.request_flush()
        await trio.lowlevel.cancel_shielded_checkpoint()

    async def _reset(self, stream: int) -> bool:
        await trio.lowlevel.checkpoint()
        self._check_status()
        if not self._reconfig:
            return False
        try:
            self._assoc.reset_streams([stream], trio.current_time())
        except LocalProtocolError:  # pragma: no cover - checked above
            return False
        self._udp.request_flush()
        return True

    # -- receiving -----------------------------------------------------------------------

    async def _receive(self) -> Received:
        await trio.lowlevel.checkpoint_if_cancelled()
        inbox = self._inbox
        while True:
            if self._state is TransportState.CLOSED:
                self._end_of_receive()
            if inbox:
                item = inbox.popleft()
                if type(item) is Message:
                    # Only now does it leave our receive window (flow control).
                    self._assoc.consumed(len(item.data))
                    if self._assoc.has_datagrams:
                        self._udp.request_flush()
                await trio.lowlevel.cancel_shielded_checkpoint()
                return item
            if self._state is not TransportState.OPEN or self._done.is_set():
                await trio.lowlevel.cancel_shielded_checkpoint()
                self._end_of_receive()
            await self._readers.park()

    # -- closing -------------------------------------------------------------------------

    def _discard_inbox(self) -> None:
        unread = sum(len(item.data) for item in self._inbox if type(item) is Message)
        self._inbox.clear()
        if unread:
            self._assoc.consumed(unread)

    async def _close(self, previous: TransportState) -> None:
        # Waits at most close_timeout seconds for the SHUTDOWN to complete, then aborts.
        self._discard_inbox()
        self._wake_all()
        await trio.lowlevel.checkpoint_if_cancelled()
        if not self._done.is_set():
            self._assoc.shutdown(trio.current_time())
            self._udp.request_flush()
            with trio.move_on_after(self.close_timeout):
                await self._done.wait()
            if not self._done.is_set():
                log.info("udp transport: SHUTDOWN timed out; aborting")
                self._abort_now("the graceful shutdown timed out")
        await trio.lowlevel.checkpoint()

    def _abort(self, reason: str) -> None:
        # The ABORT is sent now, synchronously: no pump may run again.
        self._discard_inbox()
        self._abort_now(reason)

    def _abort_now(self, reason: str = "") -> None:
        if not self._done.is_set():
            if not self._assoc.closed:
                self._assoc.abort(reason)
                self._udp.flush_now(trio.current_time())
            self._finish(None)
        self._wake_all()


# -- the listener -------------------------------------------------------------------------


@final
class UDPListener(MessageListener):
    """Accepts SCTP associations on one SCTP port of a (possibly shared) UDP socket.
    Created by :func:`open_udp_listener`."""

    kind = "udp"

    def __init__(self, udp: _UDPSocket, endpoint: Endpoint, backlog: int) -> None:
        self._udp = udp
        self._endpoint = endpoint
        self._queue: deque[UDPTransport] = deque()
        self._backlog = backlog
        self._arrived = trio.lowlevel.ParkingLot()

    def __repr__(self) -> str:
        return f"<UDPListener sctp port {self.port} on udp {self.udp_address}>"

    @property
    def port(self) -> int:
        """The SCTP port this listener accepts associations on."""
        return self._endpoint.local_port

    @property
    def udp_port(self) -> int:
        """The UDP port its socket is bound to (the encapsulation port)."""
        return self._udp.address[1]

    @property
    def udp_address(self) -> tuple[str, int]:
        """The UDP address its socket is bound to."""
        return _plain(self._udp.address)

    def _deliver(self, transport: UDPTransport) -> None:
        if self._closed or len(self._queue) >= self._backlog:
            transport.abort("the listener is closed or its backlog is full")
            return
        self._queue.append(transport)
        self._arrived.unpark_all()

    if TYPE_CHECKING:

        async def accept(self) -> UDPTransport:
            """The next association (see :meth:`MessageListener.accept`)."""

    async def _accept(self) -> UDPTransport:
        await trio.lowlevel.checkpoint_if_cancelled()
        while True:
            if self._closed:
                raise trio.ClosedResourceError("this udp listener was closed")
            if self._queue:
                transport = self._queue.popleft()
                await trio.lowlevel.cancel_shielded_checkpoint()
                return transport
            await self._arrived.park()

    def _close(self) -> None:
        # Associations already accepted go on until open_udp_listener's block ends.
        self._endpoint.accept = False
        while self._queue:
            self._queue.popleft().abort("the listener closed")
        for assoc in self._endpoint.associations:
            transport = self._udp.transports.get(assoc)
            if transport is not None and not transport._up:
                transport.abort()
        self._arrived.unpark_all()


# -- opening ------------------------------------------------------------------------------


@asynccontextmanager
async def open_udp_transport(
    host: str | Sequence[str],
    port: int,
    *,
    udp_port: int = 0,
    remote_udp_port: int | None = None,
    outbound_streams: int = 10,
    max_inbound_streams: int = 10,
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    local_addresses: Sequence[str] | None = None,
    config: SCTPConfig | None = None,
) -> AsyncIterator[UDPTransport]:
    """Establish an SCTP association over UDP with ``host``:``port`` and yield it.

    The association (and its socket's pump task) lives as long as the ``async with``;
    close it with ``aclose()`` inside the block for a graceful end, else it is aborted
    on exit.

    Args:
        host: the peer's address or name (one path: the first of several is used).
        port: the peer's SCTP port.
        udp_port: our UDP port: 0 (default) for a socket of our own on an ephemeral
            port, or a fixed port, shared with other users of it in this process.
        remote_udp_port: the peer's UDP port (default 9899).
        outbound_streams: streams we ask to send on.
        max_inbound_streams: most streams we accept from the peer.
        max_message_size: largest message accepted (and sent).
        local_addresses: the local address to bind (the first one).
        config: core options (MTU, RTO...); stream counts, message size and
            ``auto_consume`` are set from the other arguments.

    Raises:
        ConnectionRefusedError: the peer answered with an ABORT, or nothing listens on
            its UDP port.
        TimeoutError: the peer never answered (Max.Init.Retransmits).
        OSError: the UDP socket could not be bound.
        ValueError: bad stream counts or message size.
    """
    if remote_udp_port is None:
        remote_udp_port = DEFAULT_UDP_PORT
    target = _first(host)
    if target is None:
        target = "127.0.0.1"
    family, peer = await _resolve(target, remote_udp_port)
    local = _first(local_addresses)
    bind_host = local if local is not None else ("::" if family == socket.AF_INET6 else "0.0.0.0")
    sctp_config = _make_config(
        config,
        loopback=_is_loopback(peer[0]),
        family=family,
        outbound_streams=outbound_streams,
        max_inbound_streams=max_inbound_streams,
        max_message_size=max_message_size,
    )
    async with _using_socket(
        family, bind_host, udp_port, connect_to=peer if udp_port == 0 else None
    ) as udp:
        endpoint = Endpoint(
            sctp_config, local_port=udp.free_sctp_port(udp.address[1]), accept=False
        )
        udp.add_endpoint(endpoint)
        try:
            assoc = endpoint.connect(peer, trio.current_time(), port)
            transport = UDPTransport(udp, endpoint, assoc)
            udp.transports[assoc] = transport
            udp.request_flush()
            await transport._settled.wait()
            if transport._connect_error is not None:
                raise transport._connect_error
            yield transport
        finally:
            udp.remove_endpoint(endpoint)


@asynccontextmanager
async def open_udp_listener(
    port: int,
    *,
    host: str | Sequence[str] | None = None,
    udp_port: int | None = None,
    outbound_streams: int = 10,
    max_inbound_streams: int = 10,
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    backlog: int = DEFAULT_BACKLOG,
    config: SCTPConfig | None = None,
) -> AsyncIterator[UDPListener]:
    """Listen for SCTP associations over UDP; yield the listener.

    The listener and every association it accepted live as long as the ``async with``:
    on exit, those still open are aborted.

    Args:
        port: our SCTP port; 0 picks a free one (see :attr:`UDPListener.port`).
        host: the local address to bind (the first one); every address by default.
        udp_port: the UDP port to bind (default 9899, shared with other listeners of
            this process on other SCTP ports); 0 for an ephemeral one (see
            :attr:`UDPListener.udp_port`).
        outbound_streams: streams we offer to send on.
        max_inbound_streams: most streams we accept from a peer.
        max_message_size: largest message accepted (and sent).
        backlog: established associations held for :meth:`UDPListener.accept`.
        config: core options, as for :func:`open_udp_transport`.

    Raises:
        OSError: ``EADDRINUSE``: the UDP port is taken by another process, or the SCTP
            port by another listener on this UDP port.
    """
    if udp_port is None:
        udp_port = DEFAULT_UDP_PORT
    if not 0 <= port <= 65535 or not 0 <= udp_port <= 65535:
        raise ValueError("ports must be between 0 and 65535")
    bind_host = _first(host)
    family: int
    if bind_host is None:
        family = socket.AF_INET6 if _dual_stack() else socket.AF_INET
        bind_host = "::" if family == socket.AF_INET6 else "0.0.0.0"
    else:
        family, _address = await _resolve(bind_host, udp_port)
        bind_host = _address[0]
    sctp_config = _make_config(
        config,
        loopback=_is_loopback(bind_host),
        family=family,
        outbound_streams=outbound_streams,
        max_inbound_streams=max_inbound_streams,
        max_message_size=max_message_size,
    )
    async with _using_socket(family, bind_host, udp_port) as udp:
        endpoint = Endpoint(sctp_config, local_port=port or udp.free_sctp_port(0), accept=True)
        udp.add_endpoint(endpoint)
        listener = UDPListener(udp, endpoint, backlog)
        udp.listeners[endpoint] = listener
        try:
            yield listener
        finally:
            listener._closed = True
            listener._arrived.unpark_all()
            udp.remove_endpoint(endpoint)


@asynccontextmanager
async def open_client(
    hosts: tuple[str, ...] | None, port: int, options: TransportOptions
) -> AsyncIterator[UDPTransport]:
    """:func:`open_udp_transport` from :class:`~trio_sctls.TransportOptions`: yields the
    association; whatever is still open on exit is aborted. ``hosts`` defaults to
    127.0.0.1 (one path: the first is used)."""
    async with open_udp_transport(
        hosts or "127.0.0.1",
        port,
        udp_port=options.udp_port or 0,
        remote_udp_port=options.remote_udp_port,
        outbound_streams=options.outbound_streams,
        max_inbound_streams=options.max_inbound_streams,
        max_message_size=options.max_message_size,
        local_addresses=options.local_addresses,
    ) as transport:
        yield transport


@asynccontextmanager
async def open_server(
    port: int, hosts: tuple[str, ...] | None, options: TransportOptions
) -> AsyncIterator[UDPListener]:
    """:func:`open_udp_listener` from :class:`~trio_sctls.TransportOptions`: yields the
    listener; on exit it is closed and the associations it accepted are aborted (they
    share its socket and pump)."""
    async with open_udp_listener(
        port,
        host=hosts,
        udp_port=options.udp_port,
        outbound_streams=options.outbound_streams,
        max_inbound_streams=options.max_inbound_streams,
        max_message_size=options.max_message_size,
    ) as listener:
        try:
            yield listener
        finally:
            with trio.CancelScope(shield=True):
                await listener.aclose()


__all__ = [
    "DEFAULT_UDP_PORT",
    "UDPListener",
    "UDPTransport",
    "open_client",
    "open_server",
    "open_udp_listener",
    "open_udp_transport",
]
