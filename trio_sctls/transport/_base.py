"""The transport interface: one SCTP association as a message-oriented, multi-stream pipe.

Everything above this layer (the secure association, the plain-SCTP API) talks to an SCTP
association only through :class:`MessageTransport`, so any implementation (the Linux
kernel, our SCTP over UDP, an in-process pair) fits under any of it.

``send_message(data, stream=s, ppid=p)`` queues one SCTP *user message*; it is delivered
whole (SCTP fragments and reassembles it), ordered within stream ``s`` unless
``unordered=True``, and waits while the association's send buffer is full.
``receive()`` returns the next :class:`Message` (whole, reassembled) or :class:`Event`
(a notification); ``receive_nowait()`` returns what is ready without waiting.

Theory of operation
===================

The lifecycle is the same on every transport, so it lives here, once: the public
methods are template methods that check the arguments, detect conflicting callers and
map the association's :class:`TransportState` to an exception (``_check_status``), and
then call the few private operations each transport implements (``_send``,
``_receive``, ``_receive_nowait``, ``_reset``, ``_close``, ``_abort``). The hot path
costs one attribute comparison more than a bare call: the checkpoints are the
transport's own, placed where a cancelled call provably did nothing.

A transport moves its state forward only (``OPEN`` to ``PEER_SHUT_DOWN`` or ``BROKEN``,
anything to ``CLOSED``), through :meth:`MessageTransport._peer_shut_down`,
:meth:`MessageTransport._break` and our own ``aclose()`` / ``abort()``.

The contract, the same on every transport (``tests/test_transport_contract.py``):

=================================================  ================================================
situation                                          outcome
=================================================  ================================================
peer graceful SHUTDOWN, then our ``send_message``  :class:`~trio_sctls.PeerShutdownError`
peer SHUTDOWN, our ``receive``                     messages already received, then
                                                   :class:`ShutdownReceived`, then
                                                   :class:`trio.EndOfChannel` on every later call
peer ABORT                                         ``receive``: messages delivered before it, then
                                                   :class:`~trio_sctls.AssociationAbortedError`
                                                   (with the peer's reason, when it sent one);
                                                   ``send_message``: the same error; repeated
association lost (retransmission limit)            :class:`~trio_sctls.AssociationLostError` on
                                                   receive and send
our own ``aclose()`` / ``abort()``, then           :class:`trio.ClosedResourceError`; tasks blocked
receive / send / reset                             in receive or send are woken with it
bad stream id, empty message, ppid not 32-bit,     :class:`ValueError`, nothing sent, state
message larger than *our* ``max_message_size``     unchanged
the peer sends a message larger than our           we abort: our ``receive`` raises
``max_message_size``                               :class:`~trio_sctls.RemoteProtocolError`; the
                                                   peer gets ``AssociationAbortedError``
we send a message within our limit but over the    it is sent; the peer aborts as above and we get
peer's                                             ``AssociationAbortedError``
two tasks in ``receive`` (or a listener's          :class:`trio.BusyResourceError`
``accept``) at once
cancellation                                       a cancelled send queued the whole message or
                                                   nothing (``Cancelled`` only when nothing); a
                                                   cancelled receive loses no message; every call
                                                   is a checkpoint
``abort(reason="")``                               sync, idempotent; the reason travels in a
                                                   User-Initiated Abort cause where the transport
                                                   can (not on Linux one-to-one sockets)
``aclose()``                                       graceful SHUTDOWN, idempotent; aborts if
                                                   cancelled
``wait_sender_dry()``                              returns once the peer acknowledged every
                                                   message sent; raises as ``send_message`` if
                                                   the association ends first
=================================================  ================================================
"""

from __future__ import annotations

import abc
import enum
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import NoReturn, TypeAlias, TypeVar

import trio

from .._errors import AssociationError, PeerShutdownError
from ._auth import AuthKeys

#: RFC 3436 section 3.2: SCTP must carry user messages of at least 2**14 + 2048 + 5 bytes
#: (the largest TLS record a TLS 1.2 peer may send). Every transport accepts at least this.
MIN_MAX_MESSAGE_SIZE = 2**14 + 2048 + 5

#: The most bytes of an abort reason sent to the peer: it is a hint for a log line.
MAX_ABORT_REASON = 256

#: Default cap on one reassembled inbound message. A TLS record never exceeds
#: MIN_MAX_MESSAGE_SIZE; plain-SCTP users may raise it. Bounding it bounds what a peer can
#: make us buffer for a single message.
DEFAULT_MAX_MESSAGE_SIZE = 256 * 1024


@dataclass(frozen=True, slots=True)
class Message:
    """One SCTP user message, as received.

    Attributes:
        data: the message's bytes, reassembled.
        stream: the SCTP stream id it arrived on.
        ppid: the payload protocol identifier, as an integer in host order.
        unordered: whether the peer sent it with the U (unordered) flag.
    """

    data: bytes
    stream: int
    ppid: int = 0
    unordered: bool = False


class Event:
    """Base class of the notifications a transport surfaces (RFC 6458 section 6.1)."""

    __slots__ = ()


class AssociationState(enum.Enum):
    """States reported by :class:`AssociationChange` (``SCTP_ASSOC_CHANGE``)."""

    COMM_UP = 0
    COMM_LOST = 1
    RESTART = 2
    SHUTDOWN_COMPLETE = 3
    CANT_START = 4


@dataclass(frozen=True, slots=True)
class AssociationChange(Event):
    """The association came up, restarted, or went away.

    Attributes:
        state: what happened.
        outbound_streams: streams we may send on (negotiated), when known.
        inbound_streams: streams the peer may send on (negotiated), when known.
        error: the SCTP cause code (0 if none).
    """

    state: AssociationState
    outbound_streams: int = 0
    inbound_streams: int = 0
    error: int = 0


class PeerAddressState(enum.Enum):
    """States reported by :class:`PeerAddressChange` (``SCTP_PEER_ADDR_CHANGE``)."""

    AVAILABLE = 0
    UNREACHABLE = 1
    REMOVED = 2
    ADDED = 3
    MADE_PRIMARY = 4
    CONFIRMED = 5
    POTENTIALLY_FAILED = 6


@dataclass(frozen=True, slots=True)
class PeerAddressChange(Event):
    """One of the peer's addresses changed state (multihoming).

    Attributes:
        address: the peer address, as a socket address tuple.
        state: its new state.
        error: the error code that caused it (0 if none).
    """

    address: tuple[str, int]
    state: PeerAddressState
    error: int = 0


@dataclass(frozen=True, slots=True)
class SendFailed(Event):
    """A message could not be sent (``SCTP_SEND_FAILED``).

    Attributes:
        stream: the stream it was sent on.
        ppid: its payload protocol identifier.
        data: the undelivered bytes (possibly truncated by the stack).
        error: the cause code.
    """

    stream: int
    ppid: int
    data: bytes
    error: int = 0


@dataclass(frozen=True, slots=True)
class ShutdownReceived(Event):
    """The peer started a graceful SHUTDOWN: it sends nothing new, and neither may we.
    Messages already received are still delivered before :class:`trio.EndOfChannel`."""


@dataclass(frozen=True, slots=True)
class RemoteError(Event):
    """The peer sent an SCTP ERROR chunk (``SCTP_REMOTE_ERROR``).

    Attributes:
        cause: the first error cause code.
        data: the rest of the chunk.
    """

    cause: int
    data: bytes = b""


@dataclass(frozen=True, slots=True)
class StreamReset(Event):
    """The peer reset some of its outgoing streams (RFC 6525 section 5.2.2), which an
    RFC 3436 endpoint does when it closes a channel: nothing more will arrive on them.

    Attributes:
        streams: the stream ids that were reset (ids of *our inbound* streams).
    """

    streams: tuple[int, ...]


Received: TypeAlias = Message | Event


class TransportState(enum.Enum):
    """Where a transport's association is in its life (see the module docstring)."""

    #: Established: messages flow both ways.
    OPEN = "open"
    #: The peer started a graceful SHUTDOWN: what it sent is still delivered, then
    #: :class:`trio.EndOfChannel`; sending raises :class:`~trio_sctls.PeerShutdownError`.
    PEER_SHUT_DOWN = "peer shut down"
    #: Aborted (by the peer, or by us because the peer broke the protocol) or lost: the
    #: error is kept and raised on every later call, after what was received before.
    BROKEN = "broken"
    #: We called ``aclose()`` or ``abort()``: every call raises
    #: :class:`trio.ClosedResourceError`.
    CLOSED = "closed"


class MessageTransport(abc.ABC):
    """One SCTP association, seen as messages on numbered streams. See the module
    docstring for the contract; subclasses implement the private operations below and
    set the negotiated ``_outbound_streams``, ``_inbound_streams`` and our
    ``_max_message_size``."""

    #: Short name of the implementation ("kernel", "memory", ...).
    kind: str = "abstract"

    _outbound_streams: int = 0
    _inbound_streams: int = 0
    _max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE
    _state: TransportState = TransportState.OPEN
    #: Why the association is BROKEN (raised again, as a fresh copy, on every call).
    _error: AssociationError | None = None
    #: The conflict detector of :meth:`receive` and :meth:`receive_nowait`.
    _receiving: bool = False

    @property
    def state(self) -> TransportState:
        """Where the association is in its life."""
        return self._state

    @property
    def outbound_streams(self) -> int:
        """The number of streams we may send on (ids ``0..outbound_streams-1``)."""
        return self._outbound_streams

    @property
    def inbound_streams(self) -> int:
        """The number of streams the peer may send on (ids ``0..inbound_streams-1``)."""
        return self._inbound_streams

    @property
    def max_message_size(self) -> int:
        """The largest message accepted from the peer (a larger one aborts the
        association) and the largest we agree to send."""
        return self._max_message_size

    @property
    def auth(self) -> AuthKeys | None:
        """The SCTP-AUTH keys (RFC 4895) when the association negotiated it, else None."""
        return None

    @property
    def local_addresses(self) -> list[tuple[str, int]]:
        """Our transport addresses in this association (several when multihomed)."""
        return []

    @property
    def peer_addresses(self) -> list[tuple[str, int]]:
        """The peer's transport addresses in this association."""
        return []

    # -- state -----------------------------------------------------------------------

    def _peer_shut_down(self) -> None:
        """The peer sent SHUTDOWN (RFC 9260 section 9.2)."""
        if self._state is TransportState.OPEN:
            self._state = TransportState.PEER_SHUT_DOWN

    def _break(self, error: AssociationError) -> None:
        """The association is over, aborted or lost: ``error`` says why. The first
        reason wins; after our own close it is not recorded."""
        if self._state is TransportState.OPEN or self._state is TransportState.PEER_SHUT_DOWN:
            self._state = TransportState.BROKEN
            self._error = error

    def _broken_error(self) -> AssociationError:
        error = self._error
        assert error is not None
        # A fresh exception per raise: one instance raised twice grows its traceback.
        return type(error)(error.detail, stream=error.stream)

    def _check_status(self) -> None:
        """Raise what a send (or a reset) in the current state raises; nothing if OPEN."""
        state = self._state
        if state is TransportState.OPEN:
            return
        if state is TransportState.CLOSED:
            raise trio.ClosedResourceError(f"this {self.kind} transport was closed")
        if state is TransportState.BROKEN:
            raise self._broken_error()
        # RFC 9260 section 9.2: after receiving SHUTDOWN, accept no new data from the
        # upper layer.
        raise PeerShutdownError("the peer shut the association down: nothing more can be sent")

    def _check_not_over(self) -> None:
        """Raise what :meth:`_check_status` raises if the association is over (broken
        or closed); after the peer's SHUTDOWN what we sent is still acknowledged."""
        if self._state is TransportState.BROKEN or self._state is TransportState.CLOSED:
            self._check_status()

    def _end_of_receive(self) -> NoReturn:
        """Raise what :meth:`receive` raises once everything received was returned and
        nothing more can arrive."""
        state = self._state
        if state is TransportState.CLOSED:
            raise trio.ClosedResourceError(f"this {self.kind} transport was closed")
        if state is TransportState.BROKEN:
            raise self._broken_error()
        raise trio.EndOfChannel

    # -- the public methods (template methods) -----------------------------------------

    async def send_message(
        self,
        data: bytes | bytearray | memoryview,
        *,
        stream: int,
        ppid: int = 0,
        unordered: bool = False,
    ) -> None:
        """Send one user message on ``stream``. Several tasks may send at once.

        If cancelled, the message was either queued whole (the call returns) or not at
        all (:class:`trio.Cancelled` is raised).

        Args:
            data: the message; must not be empty, nor larger than
                :attr:`max_message_size`.
            stream: an outbound stream id, ``0 <= stream < outbound_streams``.
            ppid: payload protocol identifier (host order, 0..2**32-1).
            unordered: send with the U flag (no ordering within the stream).

        Raises:
            ValueError: bad stream id, empty or too large message, or out-of-range
                ppid; nothing was sent.
            trio.ClosedResourceError: we closed or aborted this transport.
            trio_sctls.PeerShutdownError: the peer shut the association down.
            trio.BrokenResourceError: the association is gone (an
                :class:`~trio_sctls.AssociationError` subclass says why).
        """
        if (
            not 0 <= stream < self._outbound_streams
            or not 0 < len(data) <= (self._max_message_size)
            or not 0 <= ppid <= 0xFFFFFFFF
        ):
            check_send_args(self, data, stream, ppid)
        if self._state is not TransportState.OPEN:
            await trio.lowlevel.checkpoint()
            self._check_status()
        await self._send(data, stream, ppid, unordered)

    async def receive(self) -> Received:
        """Return the next message or notification.

        A cancelled receive loses nothing: what it would have returned is returned by
        the next call.

        Raises:
            trio.EndOfChannel: the association was shut down gracefully.
            trio.ClosedResourceError: we closed or aborted this transport.
            trio.BrokenResourceError: the association was aborted or lost (an
                :class:`~trio_sctls.AssociationError` subclass says why).
            trio.BusyResourceError: another task is already receiving.
        """
        if self._receiving:
            raise trio.BusyResourceError(
                f"another task is already receiving on this {self.kind} transport"
            )
        self._receiving = True
        try:
            if self._state is TransportState.CLOSED:
                await trio.lowlevel.checkpoint()
                self._end_of_receive()
            return await self._receive()
        finally:
            self._receiving = False

    def receive_nowait(self) -> Received:
        """Return the next message or notification if one is ready now, without
        waiting and without a checkpoint: for a reader that drains what arrived before
        it next awaits :meth:`receive`.

        What :meth:`receive` would raise at the end of the association may be raised
        here too, or left to the next :meth:`receive`.

        Raises:
            trio.WouldBlock: nothing is ready now.
            trio.ClosedResourceError: we closed or aborted this transport.
            trio.BusyResourceError: another task is receiving.
        """
        if self._receiving:
            raise trio.BusyResourceError(
                f"another task is already receiving on this {self.kind} transport"
            )
        if self._state is TransportState.CLOSED:
            self._end_of_receive()
        return self._receive_nowait()

    async def reset_outgoing_stream(self, stream: int) -> bool:
        """Ask SCTP to reset our outgoing ``stream`` after what is queued on it (RFC 6525
        Outgoing SSN Reset Request): the peer learns that nothing more will come on it.

        Returns:
            ``False`` if the association does not support stream reconfiguration (the
            peer did not offer it), ``True`` once the request is queued.

        Raises:
            ValueError: ``stream`` is not one of our outbound streams.
            trio.ClosedResourceError: we closed or aborted this transport.
            trio.BrokenResourceError: the association is gone or shutting down.
        """
        if not 0 <= stream < self._outbound_streams:
            raise _stream_out_of_range(self, stream)
        if self._state is not TransportState.OPEN:
            await trio.lowlevel.checkpoint()
            self._check_status()
        return await self._reset(stream)

    async def wait_sender_dry(self) -> None:
        """Wait until the peer has acknowledged every message sent so far: nothing is
        left to send or retransmit (RFC 6458's sender dry event). DTLS over SCTP waits
        for this before a close_notify, so that it cannot overtake data on other streams.

        Raises:
            trio.ClosedResourceError: we closed or aborted this transport.
            trio.BrokenResourceError: the association failed before everything was
                acknowledged, or the peer had shut it down before the call (as
                :meth:`send_message` would raise).
        """
        if self._state is not TransportState.OPEN:
            await trio.lowlevel.checkpoint()
            self._check_status()
        await self._wait_sender_dry()

    async def aclose(self) -> None:
        """Shut the association down gracefully (SCTP SHUTDOWN) and release it.

        Queued data is still delivered; unread inbound data is discarded. Idempotent.
        Tasks blocked in this transport are woken with :class:`trio.ClosedResourceError`.

        .. warning:: If cancelled, the association is aborted instead, so nothing is
           left half-open.
        """
        if self._state is TransportState.CLOSED:
            await trio.lowlevel.checkpoint()
            return
        previous = self._state
        self._state = TransportState.CLOSED
        try:
            await self._close(previous)
        except BaseException:
            self._abort("")
            raise

    def abort(self, reason: str = "") -> None:
        """Abort the association at once (SCTP ABORT) and release it. Idempotent.
        Tasks blocked in this transport are woken with :class:`trio.ClosedResourceError`.

        Args:
            reason: told to the peer, where the transport can, in a User-Initiated Abort
                error cause (RFC 9260 section 3.3.10.12), so its error can say why.
        """
        self._state = TransportState.CLOSED
        self._abort(reason[:MAX_ABORT_REASON])

    def __aiter__(self) -> MessageTransport:
        return self

    async def __anext__(self) -> Received:
        try:
            return await self.receive()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None

    # -- what each transport implements --------------------------------------------------

    @abc.abstractmethod
    async def _send(
        self, data: bytes | bytearray | memoryview, stream: int, ppid: int, unordered: bool
    ) -> None:
        """Queue one message whose arguments are valid, in state OPEN: checkpoint, wait
        for room (re-checking :meth:`_check_status` after every wait), queue it whole."""

    @abc.abstractmethod
    async def _receive(self) -> Received:
        """The next item, or :meth:`_end_of_receive` once nothing more can arrive.
        Called with the conflict detector held, in any state but CLOSED; must wake
        with :class:`trio.ClosedResourceError` when the transport is closed meanwhile."""

    def _receive_nowait(self) -> Received:
        """The next item if ready now, else :class:`trio.WouldBlock`."""
        raise trio.WouldBlock

    async def _reset(self, stream: int) -> bool:
        """Reset our outgoing ``stream`` (valid, state OPEN); default: unsupported."""
        await trio.lowlevel.checkpoint()
        return False

    @abc.abstractmethod
    async def _wait_sender_dry(self) -> None:
        """Return (after a checkpoint) once everything sent is acknowledged; raise
        (:meth:`_check_not_over`) if the association is over first."""

    @abc.abstractmethod
    async def _close(self, previous: TransportState) -> None:
        """The graceful close, the state already CLOSED (``previous`` is what it was):
        wake blocked tasks, SHUTDOWN, wait for it; checkpoint. An exception (or
        cancellation) makes the caller :meth:`_abort`."""

    @abc.abstractmethod
    def _abort(self, reason: str) -> None:
        """Send ABORT (with ``reason`` where possible) unless the association is gone,
        release everything and wake blocked tasks. Idempotent."""


class MessageListener(abc.ABC):
    """Accepts incoming associations, one :class:`MessageTransport` each."""

    kind: str = "abstract"

    _closed: bool = False
    _accepting: bool = False

    @property
    @abc.abstractmethod
    def port(self) -> int:
        """The port this listener is bound to (useful after binding port 0)."""

    @property
    def udp_port(self) -> int | None:
        """The UDP port SCTP travels in, for a client's ``remote_udp_port``: set on the
        udp transport only (``None`` elsewhere)."""
        return None

    async def accept(self) -> MessageTransport:
        """Wait for the next association and return it, already established.

        Raises:
            trio.ClosedResourceError: the listener was closed (also when closed while
                this call waits).
            trio.BusyResourceError: another task is already accepting.
        """
        if self._accepting:
            raise trio.BusyResourceError(
                f"another task is already accepting on this {self.kind} listener"
            )
        self._accepting = True
        try:
            if self._closed:
                await trio.lowlevel.checkpoint()
                raise trio.ClosedResourceError(f"this {self.kind} listener was closed")
            return await self._accept()
        finally:
            self._accepting = False

    async def aclose(self) -> None:
        """Stop listening; associations not yet accepted are aborted. Idempotent."""
        if not self._closed:
            self._closed = True
            self._close()
        await trio.lowlevel.checkpoint()

    @abc.abstractmethod
    async def _accept(self) -> MessageTransport:
        """The next association; :class:`trio.ClosedResourceError` once closed."""

    @abc.abstractmethod
    def _close(self) -> None:
        """Stop listening, abort the backlog, wake a blocked :meth:`_accept`."""


def check_send_args(
    transport: MessageTransport, data: bytes | bytearray | memoryview, stream: int, ppid: int
) -> None:
    """Validate ``send_message`` arguments the same way for every transport.

    Raises:
        ValueError: what is wrong with them.
    """
    if not 0 <= stream < transport.outbound_streams:
        raise _stream_out_of_range(transport, stream)
    if not len(data):
        raise ValueError("SCTP user messages must not be empty")
    if len(data) > transport.max_message_size:
        raise ValueError(
            f"message of {len(data)} bytes on stream {stream} exceeds max_message_size "
            f"({transport.max_message_size})"
        )
    if not 0 <= ppid < 2**32:
        raise ValueError(f"ppid {ppid} does not fit in 32 bits")


def _stream_out_of_range(transport: MessageTransport, stream: int) -> ValueError:
    return ValueError(
        f"stream {stream} out of range: this association has "
        f"{transport.outbound_streams} outbound streams"
    )


_Transport = TypeVar("_Transport", bound=MessageTransport)
_Listener = TypeVar("_Listener", bound=MessageListener)


@asynccontextmanager
async def aborted_on_exit(connecting: Awaitable[_Transport]) -> AsyncIterator[_Transport]:
    """Await ``connecting``; yield the transport, aborted on exit (no-op once closed)."""
    transport = await connecting
    try:
        yield transport
    finally:
        transport.abort()


@asynccontextmanager
async def closed_on_exit(listening: Awaitable[_Listener]) -> AsyncIterator[_Listener]:
    """Await ``listening``; yield the listener, closed on exit even when cancelled."""
    listener = await listening
    try:
        yield listener
    finally:
        with trio.CancelScope(shield=True):
            await listener.aclose()
