"""Events: what the association tells its driver, one at a time, via ``next_event()``."""

from __future__ import annotations

from dataclasses import dataclass

from ._causes import ErrorCause


class Event:
    """Base class of every event."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class AssociationUp(Event):
    """The handshake completed (RFC 9260, COMMUNICATION UP notification).

    Attributes:
        outbound_streams: streams we may send on (ids ``0 .. outbound_streams - 1``).
        inbound_streams: streams the peer may send on.
        reconfig: both sides announced RE-CONFIG, so ``reset_streams()`` is available.
    """

    outbound_streams: int
    inbound_streams: int
    reconfig: bool


@dataclass(frozen=True, slots=True)
class AssociationAccepted(Event):
    """An ``Endpoint`` created this association from a valid COOKIE ECHO.

    It is followed by the association's :class:`AssociationUp`.
    """


@dataclass(frozen=True, slots=True)
class MessageReceived(Event):
    """One complete user message (reassembled, and in order unless ``unordered``)."""

    stream: int
    ppid: int
    data: bytes
    unordered: bool = False


@dataclass(frozen=True, slots=True)
class ShutdownReceived(Event):
    """The peer started a graceful shutdown: it will send no new messages, nor may we."""


@dataclass(frozen=True, slots=True)
class ShutdownComplete(Event):
    """The graceful shutdown finished; all data in both directions was acknowledged."""


@dataclass(frozen=True, slots=True)
class AssociationAborted(Event):
    """The association was aborted, by us (``abort()`` or a peer protocol violation) or by
    the peer (an ABORT chunk).

    Attributes:
        reason: human-readable; the peer's User-Initiated Abort reason when it gave one.
        by_peer: the ABORT came from the peer.
        causes: the error causes of the ABORT chunk.
    """

    reason: str
    by_peer: bool
    causes: tuple[ErrorCause, ...] = ()


@dataclass(frozen=True, slots=True)
class AssociationLost(Event):
    """The peer stopped answering: a retransmission limit was reached (Section 8.1)."""

    reason: str


@dataclass(frozen=True, slots=True)
class StreamResetDone(Event):
    """Streams were reset (RFC 6525): their sequence numbers start again from 0.

    Attributes:
        streams: the stream ids.
        outgoing: ``True`` when our ``reset_streams()`` request completed (everything
            queued before it was delivered first); ``False`` when the peer reset its
            outgoing streams, i.e. our incoming ones with those ids.
    """

    streams: tuple[int, ...]
    outgoing: bool


@dataclass(frozen=True, slots=True)
class StreamResetFailed(Event):
    """The peer refused our stream reset (RFC 6525 result code ``result``)."""

    streams: tuple[int, ...]
    result: int


@dataclass(frozen=True, slots=True)
class PeerError(Event):
    """The peer sent an ERROR chunk (informational; the association goes on)."""

    causes: tuple[ErrorCause, ...]
