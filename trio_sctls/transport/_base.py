"""The transport interface: one SCTP association as a message-oriented, multi-stream pipe.

Everything above this layer (the secure association, the plain-SCTP API) talks to an SCTP
association only through :class:`MessageTransport`, so any implementation (the Linux
kernel, an in-process pair, later a userspace SCTP over UDP) fits under any of it.

The contract, in short:

* ``send_message(data, stream=s, ppid=p)`` queues one SCTP *user message*; it is delivered
  whole (SCTP fragments and reassembles it), ordered within stream ``s`` unless
  ``unordered=True``. It waits while the association's send buffer is full.
* ``receive()`` returns the next :class:`Message` (whole, reassembled) or
  :class:`Event` (a notification). After a graceful shutdown it raises
  :class:`trio.EndOfChannel`; after an abort or loss it raises an
  :class:`~trio_sctls.AssociationError` subclass; after our own ``aclose()``/``abort()``
  it raises :class:`trio.ClosedResourceError`. ``receive_nowait()`` returns what is
  ready without waiting (or raises :class:`trio.WouldBlock`); a transport may leave it
  at that default, which never has anything ready.
* ``aclose()`` runs SCTP's graceful SHUTDOWN (data already queued is still delivered) and
  releases the association; ``abort()`` sends an ABORT at once. Both are idempotent.
"""

from __future__ import annotations

import abc
import enum
from dataclasses import dataclass
from typing import TypeAlias

import trio

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


class MessageTransport(abc.ABC):
    """One SCTP association, seen as messages on numbered streams. See the module
    docstring for the contract."""

    #: Short name of the implementation ("kernel", "memory", ...).
    kind: str = "abstract"

    @property
    @abc.abstractmethod
    def outbound_streams(self) -> int:
        """The number of streams we may send on (ids ``0..outbound_streams-1``)."""

    @property
    @abc.abstractmethod
    def inbound_streams(self) -> int:
        """The number of streams the peer may send on (ids ``0..inbound_streams-1``)."""

    @property
    @abc.abstractmethod
    def max_message_size(self) -> int:
        """The largest inbound message accepted; larger ones abort the association."""

    @property
    def local_addresses(self) -> list[tuple[str, int]]:
        """Our transport addresses in this association (several when multihomed)."""
        return []

    @property
    def peer_addresses(self) -> list[tuple[str, int]]:
        """The peer's transport addresses in this association."""
        return []

    @abc.abstractmethod
    async def send_message(
        self,
        data: bytes | bytearray | memoryview,
        *,
        stream: int,
        ppid: int = 0,
        unordered: bool = False,
    ) -> None:
        """Send one user message on ``stream``.

        Args:
            data: the message; must not be empty.
            stream: an outbound stream id, ``0 <= stream < outbound_streams``.
            ppid: payload protocol identifier (host order, 0..2**32-1).
            unordered: send with the U flag (no ordering within the stream).

        Raises:
            ValueError: bad stream id, empty message or out-of-range ppid.
            trio.ClosedResourceError: we closed or aborted this transport.
            trio.BrokenResourceError: the association is gone (an
                :class:`~trio_sctls.AssociationError` subclass says why).
        """

    @abc.abstractmethod
    async def receive(self) -> Received:
        """Return the next message or notification.

        Raises:
            trio.EndOfChannel: the association was shut down gracefully.
            trio.ClosedResourceError: we closed or aborted this transport.
            trio.BrokenResourceError: the association was aborted or lost.
            trio.BusyResourceError: another task is already receiving.
        """

    def receive_nowait(self) -> Received:
        """Return the next message or notification if one is ready now, without
        waiting and without a checkpoint: for a reader that drains what arrived before
        it next awaits :meth:`receive`.

        What :meth:`receive` would raise at the end of the association may be raised
        here too, or left to the next :meth:`receive`. The default has nothing ready.

        Raises:
            trio.WouldBlock: nothing is ready now.
            trio.BusyResourceError: another task is receiving.
        """
        raise trio.WouldBlock

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Shut the association down gracefully (SCTP SHUTDOWN) and release it.

        Queued data is still delivered. Idempotent. If cancelled, the association is
        aborted instead, so nothing is left half-open.
        """

    @abc.abstractmethod
    def abort(self, reason: str = "") -> None:
        """Abort the association at once (SCTP ABORT) and release it. Idempotent.

        Args:
            reason: told to the peer, where the transport can, in a User-Initiated Abort
                error cause (RFC 9260 section 3.3.10.12), so its error can say why.
        """

    async def reset_outgoing_stream(self, stream: int) -> bool:
        """Ask SCTP to reset our outgoing ``stream`` after what is queued on it (RFC 6525
        Outgoing SSN Reset Request): the peer learns that nothing more will come on it.

        Returns:
            ``False`` if the association does not support stream reconfiguration (the
            peer did not offer it), ``True`` once the request is queued.
        """
        await trio.lowlevel.checkpoint()
        return False

    def __aiter__(self) -> MessageTransport:
        return self

    async def __anext__(self) -> Received:
        try:
            return await self.receive()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None


class MessageListener(abc.ABC):
    """Accepts incoming associations, one :class:`MessageTransport` each."""

    kind: str = "abstract"

    @property
    @abc.abstractmethod
    def port(self) -> int:
        """The port this listener is bound to (useful after binding port 0)."""

    @abc.abstractmethod
    async def accept(self) -> MessageTransport:
        """Wait for the next association and return it, already established."""

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Stop listening. Idempotent."""


def check_send_args(
    transport: MessageTransport, data: bytes | bytearray | memoryview, stream: int, ppid: int
) -> None:
    """Validate ``send_message`` arguments the same way for every transport."""
    if not 0 <= stream < transport.outbound_streams:
        raise ValueError(
            f"stream {stream} out of range: this association has "
            f"{transport.outbound_streams} outbound streams"
        )
    if not len(data):
        raise ValueError("SCTP user messages must not be empty")
    if not 0 <= ppid < 2**32:
        raise ValueError(f"ppid {ppid} does not fit in 32 bits")
