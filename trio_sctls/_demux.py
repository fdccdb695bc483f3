"""The demultiplexer: one task reads the SCTP association and hands out what arrives.

Theory of operation
===================

SCTP tells us a message's stream only after we have received it, so one task per
association (the demux) reads the transport and appends each message to its stream's
:class:`~trio_sctls._pipe.StreamPipe` without ever waiting for a reader. It takes in what
has arrived in batches (one ``receive()``, then ``receive_nowait()`` while messages are
ready, up to :data:`DRAIN_AT_ONCE`), so the readers of a batch all run in the next
scheduling round and the demux runs once per batch, not once per message.

What arrives, and where it goes:

* a TLS record on a TLS stream (ids ``0..n-1``): to that stream's pipe, or, while the
  association drives that channel's handshake, straight to the handshake driver
  (:meth:`HandshakeDriver.take_message <trio_sctls._handshakes.HandshakeDriver.take_message>`);
* a message on a stream beyond the TLS range: to the plain-message queue when the user
  opted in (RFC 3436 section 7), otherwise a protocol error;
* an unordered message on a TLS stream: a protocol error (section 6.2);
* a notification: to the event queue (the newest :data:`MAX_KEPT_EVENTS`); a stream reset
  also ends that stream's pipe.

Budgets. Buffers are bounded: each stream may hold ``stream_budget`` unread bytes and the
association ``association_budget``. Below both, a reader that does not read one channel
holds back nothing else. At a bound the ``overflow`` policy applies:

* ``"pause"`` (default): the demux stops reading the transport until the reader catches
  up. SCTP's receive window then pushes back on the peer: memory stays bounded, and
  every stream stalls, as SCTP itself has no per-stream flow control.
* ``"abort"``: the association is aborted with :class:`BufferLimitError` naming the
  stream: for servers that would rather drop a peer than be slowed by one reader.

The demux never raises into its nursery: errors belong to the association
(:meth:`Lifecycle.fail <trio_sctls._lifecycle.Lifecycle.fail>`), and surface on its
channels. The per-message path (:meth:`Demux._dispatch`, :meth:`StreamPipe.feed`) has no
await and copies nothing.
"""

from __future__ import annotations

import contextlib
import logging
from collections import deque
from typing import TYPE_CHECKING, Any, final

import trio

from ._errors import AssociationError, AssociationLostError, BufferLimitError, RemoteProtocolError
from ._lifecycle import Lifecycle, State
from ._options import AssociationOptions
from ._pipe import StreamPipe
from .transport import Event, Message, MessageTransport, ShutdownReceived, StreamReset

if TYPE_CHECKING:
    from ._handshakes import HandshakeDriver
    from ._tls import TLSObject

log = logging.getLogger("trio_sctls")

#: Messages the demux takes in per scheduling round, at most, when more are ready.
DRAIN_AT_ONCE = 64
#: Notifications kept for :meth:`SecureAssociation.receive_event`; older ones are dropped.
MAX_KEPT_EVENTS = 256


@final
class Demux:
    """Reads one association's transport and feeds its pipes, queues and handshakes.

    It is the owner of the pipes (:class:`~trio_sctls._pipe.PipeOwner`). Created before
    the channels (they are built over its pipes); :meth:`attach` then joins it to the
    handshake driver.

    Args:
        transport: the SCTP association to read.
        lifecycle: the association's shared state.
        options: budgets, overflow policy, plain streams, PPID.
        server_side: whether the first byte of each stream starts a server handshake
            (the driver's watchdog times it).
    """

    def __init__(
        self,
        transport: MessageTransport,
        lifecycle: Lifecycle,
        options: AssociationOptions,
        *,
        server_side: bool,
    ) -> None:
        self.transport = transport
        self._life = lifecycle
        self._stream_budget = options.stream_budget
        self._association_budget = options.association_budget
        self._overflow = options.overflow
        self._plain_streams = options.plain_streams
        n = min(transport.inbound_streams, transport.outbound_streams)
        self.pipes = [StreamPipe(self, i, ppid=options.ppid) for i in range(n)]
        self._tls: list[TLSObject] = []
        self._handshakes: HandshakeDriver | None = None
        # Server: streams not heard from yet (their first byte starts the watchdog's
        # clock); an empty set costs the per-message path one truth test.
        self._unheard: set[int] = set(range(n)) if server_side else set()
        #: Unread bytes in the pipes and the plain queue, together.
        self.buffered = 0
        self._drained = trio.lowlevel.ParkingLot()
        #: Whether the demux is paused at a budget, and the pipe whose own budget did
        #: it (``None`` while paused: the association's budget did).
        self.paused = False
        self.paused_on: StreamPipe | None = None
        self.events: deque[Event] = deque(maxlen=MAX_KEPT_EVENTS)
        self._event_arrived = trio.lowlevel.ParkingLot()
        self.plain_queue: deque[Message] = deque()
        self._plain_arrived = trio.lowlevel.ParkingLot()
        #: Set when the peer shut the association down gracefully.
        self.peer_shut_down = False
        self._scope = trio.CancelScope()
        lifecycle.add_waker(self.wake)

    def attach(self, handshakes: HandshakeDriver, tls: list[TLSObject]) -> None:
        """Join the handshake driver and the channels' TLS objects (built over
        :attr:`pipes`, so after this object)."""
        self._handshakes = handshakes
        self._tls = tls

    # -- the task ----------------------------------------------------------------------

    async def run(self) -> None:
        """Read the transport until it ends, the association fails or :meth:`stop`."""
        with self._scope:
            try:
                await self._read_forever()
            except trio.EndOfChannel:
                self.peer_shut_down = True
                for pipe in self.pipes:
                    pipe.finish()
                self._life.wake()
            except trio.ClosedResourceError:
                pass
            except AssociationError as exc:
                self._life.fail(exc)
            except trio.BrokenResourceError as exc:
                self._life.fail(AssociationLostError(str(exc) or "the association failed"))

    async def _read_forever(self) -> None:
        transport = self.transport
        while True:
            item = await transport.receive()
            # Then take in, without yielding, what else has arrived (up to a bound, so
            # that readers are not kept waiting): the readers it wakes all run in the
            # next scheduling round, and the demux runs once per batch rather than once
            # per message.
            left = DRAIN_AT_ONCE
            while True:
                if isinstance(item, Message):
                    if self._dispatch(item):
                        await self._pause()
                        break
                else:
                    self._notify(item)
                left -= 1
                if not left:
                    break
                try:
                    item = transport.receive_nowait()
                except trio.WouldBlock:
                    break

    def stop(self) -> None:
        """Stop reading (the association is over)."""
        self._scope.cancel()

    def wake(self) -> None:
        """Wake every reader and a paused demux, to notice a change of state."""
        for pipe in self.pipes:
            pipe.wake()
        self._drained.unpark_all()
        self._event_arrived.unpark_all()
        self._plain_arrived.unpark_all()

    # -- per message ---------------------------------------------------------------------

    def _dispatch(self, message: Message) -> bool:
        """Hand one message to its stream (never waits). Returns ``True`` when the
        buffers are over budget under the "pause" policy: the demux must then
        :meth:`_pause` before it reads on."""
        stream = message.stream
        pipe: StreamPipe | None
        if stream < len(self.pipes):
            if message.unordered:
                self._life.fail(
                    RemoteProtocolError(
                        "unordered message on a TLS stream (RFC 3436 section 6.2)",
                        stream=stream,
                    )
                )
                return False
            pipe = self.pipes[stream]
            if pipe.closed:
                return False  # closed locally: discarded
            if self._unheard and stream in self._unheard:
                self._unheard.discard(stream)
                assert self._handshakes is not None
                self._handshakes.first_data(stream)
            tls = self._tls[stream]
            if tls.driven and tls.handshake_finished is None:
                assert self._handshakes is not None
                self._handshakes.take_message(stream, message.data)
                return False
            pipe.feed(message.data)
        elif self._plain_streams:
            pipe = None
            self.plain_queue.append(message)
            self._plain_arrived.unpark_all()
        else:
            self._life.fail(
                RemoteProtocolError(
                    f"data on stream {stream}, beyond the TLS streams 0..{len(self.pipes) - 1}"
                    " (RFC 3436 section 7; pass plain_streams=True to accept it)",
                    stream=stream,
                )
            )
            return False
        self.buffered += len(message.data)
        if not self._over_budget(pipe) or self._life.state is not State.OPEN:
            return False
        if self._overflow == "abort":
            self._life.fail(
                BufferLimitError(
                    f"{pipe.buffered if pipe else self.buffered} unread bytes exceed the budget",
                    stream=stream,
                )
            )
            return False
        # Name the stream only if its own budget is what was exceeded.
        self.paused_on = pipe if pipe is not None and pipe.buffered > self._stream_budget else None
        return True

    def _over_budget(self, pipe: StreamPipe | None) -> bool:
        return self.buffered > self._association_budget or (
            pipe is not None and pipe.buffered > self._stream_budget
        )

    async def _pause(self) -> None:
        """The "pause" policy: stop reading the transport until the readers are back
        under budget; SCTP's window pushes back on the peer meanwhile."""
        pipe = self.paused_on
        self.paused = True
        try:
            while self._over_budget(pipe) and self._life.state is State.OPEN:
                await self._drained.park()
        finally:
            self.paused = False
            self.paused_on = None

    def _notify(self, event: Event) -> None:
        if isinstance(event, StreamReset):
            for stream in event.streams:
                if stream < len(self.pipes):
                    self.pipes[stream].finish()
            if self._handshakes is not None:
                # A client waiting for a handshake on a stream the peer ended.
                self._handshakes.wake()
        if isinstance(event, ShutdownReceived):
            log.debug("peer started a graceful shutdown")
        self.events.append(event)
        self._event_arrived.unpark_all()

    # -- queues the facade reads ---------------------------------------------------------

    async def receive_plain(self) -> Message:
        """The next plain message (see :meth:`SecureAssociation.receive_unprotected`)."""
        await self._wait_for(self.plain_queue, self._plain_arrived)
        message = self.plain_queue.popleft()
        self.note_consumed(len(message.data))
        await trio.lowlevel.cancel_shielded_checkpoint()
        return message

    async def receive_event(self) -> Event:
        """The next notification (see :meth:`SecureAssociation.receive_event`)."""
        await self._wait_for(self.events, self._event_arrived)
        event = self.events.popleft()
        await trio.lowlevel.cancel_shielded_checkpoint()
        return event

    async def _wait_for(self, queue: deque[Any], arrived: trio.lowlevel.ParkingLot) -> None:
        """Return once ``queue`` holds something (parking on ``arrived`` meanwhile); the
        first half of a checkpoint: the caller takes the item, then finishes it with
        ``cancel_shielded_checkpoint``.

        Raises:
            trio.Cancelled: before anything was taken.
            trio.EndOfChannel: the queue is empty and the peer has shut down.
            AssociationError: the queue is empty and the association is broken.
            trio.ClosedResourceError: the queue is empty and the association was closed.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        while not queue:
            self._life.check_usable()
            if self.peer_shut_down:
                raise trio.EndOfChannel
            await arrived.park()

    # -- PipeOwner -----------------------------------------------------------------------

    def check_usable(self) -> None:
        """Raise the association's error if it is broken, or ClosedResourceError."""
        self._life.check_usable()

    def note_consumed(self, nbytes: int) -> None:
        """Bytes left a buffer: give the budget back, and let a paused demux go on."""
        self.buffered -= nbytes
        self._drained.unpark_all()

    def pipe_closed(self, pipe: StreamPipe) -> None:
        """Tell the peer this channel is gone (RFC 6525 stream reset), unless the whole
        association is closing anyway."""
        self._life.spawn(self._reset_stream, pipe.stream_id)

    def flush_requested(self, pipe: StreamPipe) -> None:
        """Bytes were queued on ``pipe`` (a handshake flight, session tickets): the
        handshake driver's flushers send them."""
        assert self._handshakes is not None
        self._handshakes.flush_requested(pipe)

    async def _reset_stream(self, stream: int) -> None:
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await self.transport.reset_outgoing_stream(stream)
