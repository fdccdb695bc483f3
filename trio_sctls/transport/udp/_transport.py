"""One SCTP association over UDP as a :class:`~trio_sctls.transport.MessageTransport`:
the sans-IO core's association, driven by the pump of its UDP socket (see
:mod:`._socket`).

Flow control, end to end. The core runs with ``auto_consume=False``: a message counts
against our advertised receive window until the application takes it out of
:meth:`UDPTransport.receive`, so a peer whose data nobody reads is stopped by SCTP's
window, not by our memory. On the sending side :meth:`UDPTransport.send_message` waits
(through Trio) while more than ``SEND_BUFFER`` bytes are queued and not acknowledged.

Blocked senders are woken one at a time (each wakes the next while room remains) rather
than all at once to find the room taken: the scheduler is the largest cost on this path.
"""

from __future__ import annotations

import errno
import math
import socket
from collections import deque
from dataclasses import replace
from typing import TYPE_CHECKING, TypeVar, final

import trio

from ..._errors import (
    AssociationAbortedError,
    AssociationError,
    AssociationLostError,
    AuthNotSupportedError,
    RemoteProtocolError,
)
from ...sctp import (
    Association,
    AssociationAborted,
    AssociationLost,
    AssociationUp,
    Endpoint,
    LocalProtocolError,
    MessageReceived,
    PeerError,
    SCTPConfig,
    StreamResetDone,
    StreamResetFailed,
)
from ...sctp import Event as SCTPEvent
from ...sctp import ShutdownComplete as SCTPShutdownComplete
from ...sctp import ShutdownReceived as SCTPShutdownReceived
from ...sctp._auth import is_auth_refusal
from .._auth import AuthKeys
from .._base import (
    MIN_MAX_MESSAGE_SIZE,
    Message,
    MessageTransport,
    Received,
    RemoteError,
    ShutdownReceived,
    StreamReset,
    TransportState,
)
from .._setup import Timers, clamped_rtos
from ._pmtu import interface_mtu
from ._socket import (
    _CORE_DEFAULTS,
    DEFAULT_MTU,
    GRACEFUL_CLOSE_TIMEOUT,
    LOOPBACK_RTO_INITIAL,
    LOOPBACK_RTO_MIN,
    RECEIVE_BUFFER,
    SEND_BUFFER,
    _plain,
    _UDPSocket,
    log,
)

if TYPE_CHECKING:
    from ._listener import UDPListener

_T = TypeVar("_T")


# -- the transport --------------------------------------------------------------------


def _make_config(
    base: SCTPConfig | None,
    *,
    loopback: bool,
    family: int,
    outbound_streams: int,
    max_inbound_streams: int,
    max_message_size: int,
    timers: Timers | None = None,
    auth: bool = False,
) -> SCTPConfig:
    """The core's configuration: ``base`` (or our defaults, tuned for loopback peers
    when ``loopback``) with the stream counts, message size and ``timers`` laid over
    it."""
    if max_message_size < MIN_MAX_MESSAGE_SIZE:
        raise ValueError(
            f"max_message_size must be at least {MIN_MAX_MESSAGE_SIZE} (RFC 3436 section 3.2)"
        )
    if base is None:
        base = SCTPConfig(
            mtu=DEFAULT_MTU,  # only the ceiling: the path MTU is discovered
            ip_header_size=20 if family == socket.AF_INET else 40,
            rto_min=LOOPBACK_RTO_MIN if loopback else _CORE_DEFAULTS.rto_min,
            rto_initial=LOOPBACK_RTO_INITIAL if loopback else _CORE_DEFAULTS.rto_initial,
        )
    try:
        if timers is not None:
            base = _with_timers(base, timers)
        return replace(
            base,
            outbound_streams=outbound_streams,
            max_inbound_streams=max_inbound_streams,
            max_message_size=max_message_size,
            receive_buffer=max(base.receive_buffer, RECEIVE_BUFFER, max_message_size),
            auto_consume=False,
            auth=auth or base.auth,
        )
    except LocalProtocolError as exc:
        raise ValueError(str(exc)) from None


def _with_timers(base: SCTPConfig, timers: Timers) -> SCTPConfig:
    """``base`` with the knobs that ``timers`` sets; the RTO bounds it leaves alone move
    only as far as ``rto_min <= rto_initial <= rto_max`` needs."""
    low, initial, high = clamped_rtos(timers, base.rto_min, base.rto_initial, base.rto_max)
    return replace(
        base,
        rto_min=low,
        rto_initial=initial,
        rto_max=high,
        heartbeat_interval=_given(timers.heartbeat_interval, base.heartbeat_interval),
        max_retransmissions=_given(timers.max_retransmissions, base.max_retransmissions),
        max_init_retransmissions=_given(
            timers.max_init_retransmissions, base.max_init_retransmissions
        ),
    )


def init_timeout(config: SCTPConfig) -> float:
    """Seconds before an INIT nobody answers fails: T1-init doubles from RTO.Initial up
    to RTO.Max, and runs Max.Init.Retransmits + 1 times (RFC 9260, Section 5.1)."""
    return sum(
        min(config.rto_initial * (1 << attempt), config.rto_max)
        for attempt in range(config.max_init_retransmissions + 1)
    )


def silent_peer_timeout(config: SCTPConfig, rto: float | None = None) -> float:
    """Seconds at most before a peer that went silent (drops everything) is declared
    lost on an idle association (RFC 9260, Sections 8.1 and 8.3), from the moment it
    went silent, with ``rto`` the RTO then (default RTO.Initial, more than a loopback
    path measures). The next heartbeat leaves within HB.interval + RTO; each unanswered
    one then counts an error, doubles the RTO up to RTO.Max and is followed by another
    HB.interval + RTO later; the error after Association.Max.Retrans ends it::

        (Max.Retrans + 2) * HB.interval + RTO + sum(min(RTO * 2**k, RTO.Max), k = 0..Max.Retrans)

    Data in flight is noticed sooner (T3-rtx needs no HB.interval between attempts).
    ``math.inf`` when heartbeats are off.
    """
    interval = config.heartbeat_interval
    if interval is None:
        return math.inf
    first = config.rto_initial if rto is None else rto
    retries = config.max_retransmissions
    backed_off = sum(min(first * (1 << k), config.rto_max) for k in range(retries + 1))
    return (retries + 2) * interval + first + backed_off


def _given(value: _T | None, default: _T) -> _T:
    return default if value is None else value


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
        self._dry = trio.lowlevel.ParkingLot()  # tasks in wait_sender_dry()
        self._settled = trio.Event()  # up, or failed before coming up
        self._done = trio.Event()  # the association is over
        self._max_message_size = assoc.config.max_message_size
        self._reconfig = False
        self._up = False
        self._connect_error: OSError | None = None
        self.close_timeout = GRACEFUL_CLOSE_TIMEOUT
        self.send_buffer = SEND_BUFFER
        # Path MTU discovery (in the core) searches no higher than the interface.
        local_mtu = interface_mtu(udp.sock.family, endpoint.address_of(assoc))
        if local_mtu is not None:
            assoc.set_local_mtu(local_mtu)

    def __repr__(self) -> str:
        state = self._assoc.state.value
        return f"<UDPTransport {self.local_addresses} -> {self.peer_addresses} {state}>"

    # -- properties --------------------------------------------------------------------

    @property
    def association(self) -> Association:
        """The sans-IO association underneath (read it; driving it is the pump's job)."""
        return self._assoc

    @property
    def auth(self) -> AuthKeys | None:
        """The SCTP-AUTH keys (RFC 4895), held by the core association, once the
        handshake agreed on it (``auth=True``); else None."""
        return self._assoc.auth

    @property
    def path_mtu(self) -> int:
        """The path MTU this association uses now, IP header included, as path MTU
        discovery (RFC 8899) found it so far; ``association.pmtud_state`` says whether
        the search is over."""
        return self._assoc.path_mtu

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
        elif isinstance(event, StreamResetDone):
            if not event.outgoing and self._state is not TransportState.CLOSED:
                self._inbox.append(StreamReset(event.streams))
                self._readers.unpark_all()
        elif isinstance(event, PeerError):
            if event.causes and self._state is not TransportState.CLOSED:
                raw = b"".join(bytes(cause) for cause in event.causes)
                self._inbox.append(RemoteError(event.causes[0].code, raw[4:]))
                self._readers.unpark_all()
        elif isinstance(event, SCTPShutdownComplete):
            self._finish(None)
        elif isinstance(event, AssociationAborted):
            if not self._up and is_auth_refusal(event.causes):
                self._connect_error = AuthNotSupportedError(
                    errno.ECONNREFUSED,
                    f"{self._where()} requires SCTP-AUTH (RFC 4895); connect with auth=True"
                    if event.by_peer
                    else f"{self._where()} does not offer SCTP-AUTH (RFC 4895), which "
                    "auth=True requires",
                )
            if event.by_peer:
                detail = f": {event.reason}" if event.causes else ""
                error: AssociationError = AssociationAbortedError(
                    f"the peer aborted the association{detail}"
                )
                if not self._up and not self._done.is_set() and self._connect_error is None:
                    self._connect_error = self._refused_error(detail)
            else:
                # Our core aborted: the peer broke the protocol (or a shutdown hung).
                error = RemoteProtocolError(f"aborted the association: {event.reason}")
            self._finish(error)
        elif isinstance(event, AssociationLost):
            if not self._up and not self._done.is_set():
                self._connect_error = self._init_timeout_error()
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

    def _where(self) -> str:
        host, udp_port = self.peer_udp_address
        return f"SCTP port {self._assoc.remote_port} at {host} (UDP port {udp_port})"

    def _refused_error(self, detail: str) -> ConnectionRefusedError:
        """The peer answered our INIT (or COOKIE ECHO) with ABORT."""
        if detail:  # a reason given: someone listens, and said no
            return ConnectionRefusedError(
                errno.ECONNREFUSED, f"{self._where()} refused the association{detail}"
            )
        return ConnectionRefusedError(errno.ECONNREFUSED, f"nothing listens on {self._where()}")

    def _init_timeout_error(self) -> TimeoutError:
        """Max.Init.Retransmits ran out: name the bound and the knobs behind it."""
        config = self._assoc.config
        retries = config.max_init_retransmissions
        return TimeoutError(
            errno.ETIMEDOUT,
            f"no answer from {self._where()}: {retries + 1} INITs (or COOKIE ECHOs) in "
            f"{init_timeout(config):.1f} s went unanswered; max_init_retransmissions="
            f"{retries}, rto_initial={config.rto_initial:g} s and rto_max="
            f"{config.rto_max:g} s set that bound (lower them to fail sooner, or put the "
            "connect under trio.fail_after)",
        )

    def _port_unreachable(self) -> None:
        """An ICMP port unreachable, tied to this association by its tags (see
        ``_UDPSocket._icmp_error``): the peer's UDP port is closed, its process gone.
        The core's AssociationAborted that follows finds the transport finished."""
        host, udp_port = self.peer_udp_address
        if not self._up:
            self._connect_error = ConnectionRefusedError(
                errno.ECONNREFUSED,
                f"nothing listens on UDP port {udp_port} at {host} (ICMP port unreachable)",
            )
        self._finish(
            AssociationAbortedError(
                f"the peer's UDP port {udp_port} at {host} is closed (ICMP port "
                "unreachable): its process is gone or its socket closed"
            )
        )

    def _connect_refused(self) -> None:
        # Without the error queue (not Linux): a connected socket's ECONNREFUSED.
        if not self._up and not self._done.is_set():
            host, udp_port = self.peer_udp_address
            self._connect_error = ConnectionRefusedError(
                errno.ECONNREFUSED, f"nothing listens on UDP port {udp_port} at {host} (ICMP)"
            )
            self._assoc.abort()
            self._finish(None)

    def _wake_all(self) -> None:
        self._readers.unpark_all()
        self._senders.unpark_all()
        self._dry.unpark_all()

    def _wake_senders(self) -> None:
        # One at a time: each sender that finds room wakes the next (see send_message),
        # instead of every blocked sender waking to find the room taken.
        if self._dry and self._assoc.queued_bytes == 0:
            self._dry.unpark_all()
        if not self._senders and not self._dry:
            self._udp.blocked.discard(self)
        elif self._senders and self._has_room(1):
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

    def _send_nowait(
        self, data: bytes | bytearray | memoryview, stream: int, ppid: int, unordered: bool = False
    ) -> None:
        """Queue one message (arguments valid) now, without waiting or a checkpoint, or
        raise :class:`trio.WouldBlock` where :meth:`_send` would wait. The association's
        handshake flights go this way (``trio_sctls._pipe``): what many channels queue
        before the pump next runs leaves in one flush, bundled up to the path MTU."""
        if self._state is not TransportState.OPEN:
            self._check_status()
        if self._senders or not self._has_room(len(data)):
            raise trio.WouldBlock
        self._assoc.send(bytes(data), stream, ppid, unordered)
        self._udp.request_flush()

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

    async def _wait_sender_dry(self) -> None:
        # The pump wakes blocked transports after every burst it processed (SACKs).
        await trio.lowlevel.checkpoint_if_cancelled()
        while self._assoc.queued_bytes:
            self._udp.blocked.add(self)
            await self._dry.park()
            self._check_not_over()
        await trio.lowlevel.cancel_shielded_checkpoint()

    # -- receiving -----------------------------------------------------------------------

    async def _receive(self) -> Received:
        await trio.lowlevel.checkpoint_if_cancelled()
        inbox = self._inbox
        while True:
            if self._state is TransportState.CLOSED:
                self._end_of_receive()
            if inbox:
                item = self._take()
                await trio.lowlevel.cancel_shielded_checkpoint()
                return item
            if self._state is not TransportState.OPEN or self._done.is_set():
                await trio.lowlevel.cancel_shielded_checkpoint()
                self._end_of_receive()
            await self._readers.park()

    def _receive_nowait(self) -> Received:
        # What the pump has put in the inbox; the end of the association is left to
        # receive(). The window updates of a drained batch leave in one SACK: the
        # flush they request runs after the reader's next checkpoint.
        if not self._inbox:
            raise trio.WouldBlock
        return self._take()

    def _take(self) -> Received:
        item = self._inbox.popleft()
        if type(item) is Message:
            # Only now does it leave our receive window (flow control).
            self._assoc.consumed(len(item.data))
            if self._assoc.has_datagrams:
                self._udp.request_flush()
        return item

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
