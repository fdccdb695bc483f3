"""SecureAssociation: RFC 3436 TLS channels over one SCTP association.

Theory of operation
===================

Shape. One SCTP association carries ``n = min(inbound, outbound)`` bidirectional streams
(RFC 3436 section 3.1); stream ids ``0..n-1`` each run their own TLS connection, and the
initiator of the association is the TLS client on all of them. Each channel is an
ordinary :class:`trio.SSLStream` over a :class:`~trio_sctls._pipe.StreamPipe`. Streams
beyond ``n`` are unidirectional and cannot carry TLS (section 7); they are reachable only
through the explicit plain-message API when the user opts in.

Demultiplexing. SCTP tells us a message's stream only after we have received it, so one
task per association (the demux) reads the transport and appends each message to its
stream's pipe without ever waiting for a reader. It takes in what has arrived in batches
(one ``receive()``, then ``receive_nowait()`` while messages are ready, up to
``DRAIN_AT_ONCE``), so the readers of a batch all run in the next scheduling round and
the demux runs once per batch, not once per message. Buffers are bounded: each stream may
hold ``stream_budget`` unread bytes and the association ``association_budget``. Below
both, a reader that does not read one channel holds back nothing else. At a bound the
``overflow`` policy applies:

* ``"pause"`` (default): the demux stops reading the transport until the reader catches
  up. SCTP's receive window then pushes back on the peer: memory stays bounded, and
  every stream stalls, as SCTP itself has no per-stream flow control.
* ``"abort"``: the association is aborted with :class:`BufferLimitError` naming the
  stream: for servers that would rather drop a peer than be slowed by one reader.

Failure. Any TLS failure on any stream, a peer certificate that differs from the first
one seen, an unordered message on a TLS stream (section 6.2) or data on a stream beyond
the TLS range without opt-in, aborts the whole association (an SCTP ABORT, so the peer
sees a clean error too), records a typed :class:`AssociationError` naming the stream, and
wakes every reader and writer so each gets it. The demux never raises into the nursery:
errors belong to the association, and surface on its channels.

Hooks into TLS. See :mod:`trio_sctls._tls`: each SSLStream's TLS object reports
handshake completion (the peer certificate is pinned or checked right there, before any
application byte is sent or returned) and failures.

Handshakes (section 8). ``parallel``: every channel at once. ``resume``: a full handshake
on stream 0, then the others resume its session (abbreviated handshakes), falling back to
full ones when no resumable session appears in time (a TLS 1.3 peer may never send a
ticket). ``lazy``: each channel shakes hands on first use; opt-in only, since a peer that
finishes every handshake before reading any data would wait forever. The server side
shakes hands on all channels in the background and never waits for them before calling
the handler, so it pairs with any client strategy.

Who drives a handshake. Not a task per channel: the association itself (see _tls.py).
The demux hands each handshake message straight to its channel's TLS object; a single
flusher task steps OpenSSL once per channel when the demux has taken in what arrived (a
flight is several messages, and each OpenSSL step costs more than its bytes), and sends
the flights OpenSSL wrote, pipe by pipe. The client's strategies wait for the channels
they started; the server's handshakes are watched by one watchdog task (each channel must
complete within ``handshake_timeout`` of its first byte). Once done, each channel's
SSLStream is stepped once so that it knows (``version()`` etc. work). A channel the user
touches before its handshake completed (a server handler reading at once, ``lazy``) is
driven by Trio's SSLStream from then on, as any SSLStream is. Where it goes, the flights
and the result are the same; what it saves is Trio's per-flight task switches, sends and
receives for every channel, which were most of the set-up's CPU beyond OpenSSL's.

Close. ``aclose()`` sends close_notify on every open channel and waits (up to
``close_timeout``) for the peer's, as RFC 3436 peers do before shutting SCTP down: late
close_notify records would otherwise be lost in the shutdown. Then it runs SCTP's
graceful SHUTDOWN. ``abort()`` sends an SCTP ABORT. Both are idempotent; a cancelled
``aclose()`` aborts, so nothing is left half-open; neither leaves a task running.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import math
import ssl
import time
from collections import deque
from collections.abc import AsyncIterator, Hashable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Literal, TypeAlias, cast, final

import trio

from ._errors import (
    AssociationError,
    AssociationLostError,
    BufferLimitError,
    HandshakeError,
    PeerIdentityError,
    RemoteProtocolError,
)
from ._pipe import StreamPipe
from ._tls import ContextAdapter, PeerIdentityMismatch, SessionCache, TLSObject, is_resumable
from ._util import unwrap_single_exception
from .transport import (
    Event,
    Message,
    MessageTransport,
    ShutdownReceived,
    StreamReset,
)

log = logging.getLogger("trio_sctls")

#: The type of a channel: a plain Trio TLS stream (over our per-stream pipe).
Channel: TypeAlias = trio.SSLStream[trio.abc.Stream]

HandshakeStrategy = Literal["parallel", "resume", "lazy"]
OverflowPolicy = Literal["pause", "abort"]

#: Unread bytes one stream may hold before the overflow policy applies: several
#: maximum-size TLS records, so a reader that is merely slow never trips it.
DEFAULT_STREAM_BUDGET = 256 * 1024
#: Unread bytes the whole association may hold.
DEFAULT_ASSOCIATION_BUDGET = 4 * 1024 * 1024
#: Seconds a handshake may take once started (the client's strategy as a whole; on the
#: server, each channel from its first ClientHello byte).
DEFAULT_HANDSHAKE_TIMEOUT = 30.0
#: Seconds to wait for the peer's close_notify on each channel when closing.
DEFAULT_CLOSE_TIMEOUT = 5.0
#: Seconds we try to deliver a TLS alert before the ABORT that follows it.
ALERT_TIMEOUT = 1.0
#: Notifications kept for :meth:`SecureAssociation.receive_event`; older ones are dropped.
MAX_KEPT_EVENTS = 256
#: Handshake bytes the association-driven channels may hold unprocessed, together,
#: before they are stepped at once rather than when the demux runs out of messages (see
#: _flusher): a peer that keeps the demux busy cannot make them pile up.
STEP_AT = 256 * 1024

#: Messages the demux takes in per scheduling round, at most, when more are ready.
DRAIN_AT_ONCE = 64

#: Tasks that send the handshake flights the association produces (see _flusher).
FLUSHERS = 4

#: The process-wide client session cache used when none is given.
default_session_cache = SessionCache()


class _State(enum.Enum):
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"
    BROKEN = "broken"


@dataclass
class ChannelInfo:
    """What happened on one channel's handshake (a snapshot; see
    :meth:`SecureAssociation.channel_info`).

    Attributes:
        stream: the SCTP stream id.
        handshake_seconds: wall time from the first handshake step to completion, or
            ``None`` if the handshake has not completed.
        resumed: whether the TLS session was resumed (abbreviated handshake).
        version: the TLS version, e.g. ``"TLSv1.3"``.
        cipher: the cipher suite name.
        note: how the strategy treated this channel, e.g. why it did not resume.
        started_at: when the handshake's first step ran, in seconds since the
            association object was created (``None`` before that).
        finished_at: when the handshake completed, on the same clock (``None`` before).
    """

    stream: int
    handshake_seconds: float | None
    resumed: bool | None
    version: str | None
    cipher: str | None
    note: str = ""
    started_at: float | None = None
    finished_at: float | None = None


@final
class SecureAssociation:
    """TLS channels (RFC 3436) over one SCTP association.

    Created by :func:`~trio_sctls.open_association` and :func:`~trio_sctls.serve`, not
    directly.

    Attributes:
        channels: one :class:`trio.SSLStream` per bidirectional stream; the index is the
            SCTP stream id.
        transport: the SCTP association underneath.
        server_side: whether we are the TLS server (the association's responder).
    """

    def __init__(
        self,
        transport: MessageTransport,
        *,
        ssl_context: ssl.SSLContext,
        server_side: bool,
        server_hostname: str | None = None,
        handshake: HandshakeStrategy = "parallel",
        session_cache: SessionCache | None = None,
        session_key: Hashable = None,
        ppid: int = 0,
        stream_budget: int = DEFAULT_STREAM_BUDGET,
        association_budget: int = DEFAULT_ASSOCIATION_BUDGET,
        overflow: OverflowPolicy = "pause",
        plain_streams: bool = False,
        close_timeout: float = DEFAULT_CLOSE_TIMEOUT,
        ticket_timeout: float | None = None,
        handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
    ) -> None:
        if handshake not in ("parallel", "resume", "lazy"):
            raise ValueError(f"unknown handshake strategy {handshake!r}")
        if overflow not in ("pause", "abort"):
            raise ValueError(f"unknown overflow policy {overflow!r}")
        self._created = time.perf_counter()
        self.transport = transport
        self.server_side = server_side
        self._ssl_context = ssl_context
        self._handshake = handshake
        self._session_cache = session_cache
        self._session_key = session_key
        self._stream_budget = stream_budget
        self._association_budget = association_budget
        self._overflow = overflow
        self._plain_streams = plain_streams
        self._close_timeout = close_timeout
        self._ticket_timeout = ticket_timeout
        self._handshake_timeout = handshake_timeout
        self._state = _State.OPEN
        self._error: AssociationError | None = None
        self._pinned: bytes | None = None
        self._pinned_stream: int | None = None
        self._buffered = 0
        self._drained = trio.lowlevel.ParkingLot()
        # The pipe whose budget made the demux pause (None: the association's, or none).
        self._paused_on: StreamPipe | None = None
        self._events: deque[Event] = deque(maxlen=MAX_KEPT_EVENTS)
        self._event_arrived = trio.lowlevel.ParkingLot()
        self._notes: dict[int, str] = {}
        self._nursery: trio.Nursery | None = None
        self._demux_scope = trio.CancelScope()
        self.peer_shut_down = False
        self._plain_queue: deque[Message] = deque()
        self._plain_arrived = trio.lowlevel.ParkingLot()
        # Pipes with bytes queued outside any send (an ordered set), and server channels
        # whose handshake the association completed, for the flusher.
        self._to_flush: dict[StreamPipe, None] = {}
        self._to_confirm: deque[int] = deque()
        # Association-driven channels with handshake messages not yet stepped, and how
        # many messages the demux dispatched (the flusher waits for it to settle).
        self._to_step: dict[int, None] = {}
        self._unstepped = 0
        self._dispatched = 0
        self._flush_wanted = trio.lowlevel.ParkingLot()
        # Streams whose association-driven handshake the client waits for.
        self._awaiting: set[int] = set()
        self._progress = trio.lowlevel.ParkingLot()
        # Server: when each stream's first byte arrived (trio clock), for the watchdog.
        self._first_data: list[float | None] = []
        self._watch_deadline = math.inf
        self._watch = trio.lowlevel.ParkingLot()

        n = min(transport.inbound_streams, transport.outbound_streams)
        self._pipes = [StreamPipe(self, i, ppid=ppid) for i in range(n)]
        self._tls: list[TLSObject] = []
        self.channels: list[Channel] = []
        for pipe in self._pipes:
            adapter = ContextAdapter(ssl_context, pipe=pipe, observer=self)
            channel: Channel = trio.SSLStream(
                cast(trio.abc.Stream, pipe),
                cast(ssl.SSLContext, adapter),
                server_hostname=None if server_side else server_hostname,
                server_side=server_side,
            )
            assert adapter.created is not None
            self._tls.append(adapter.created)
            self.channels.append(channel)
        if server_side:
            # The server's handshakes run as their ClientHellos arrive, driven by the
            # demux until the handler uses a channel (see _tls.py).
            self._first_data = [None] * n
            for tls in self._tls:
                tls.drive()

    # -- public ------------------------------------------------------------------------

    @property
    def inbound_streams(self) -> int:
        """Streams the peer sends on (negotiated)."""
        return self.transport.inbound_streams

    @property
    def outbound_streams(self) -> int:
        """Streams we send on (negotiated)."""
        return self.transport.outbound_streams

    @property
    def error(self) -> AssociationError | None:
        """Why the association broke, or ``None``."""
        return self._error

    @property
    def peer_certificate(self) -> bytes | None:
        """The peer's certificate (DER) pinned at the first completed handshake."""
        return self._pinned

    def channel_info(self, stream: int) -> ChannelInfo:
        """Handshake details of one channel (see :class:`ChannelInfo`)."""
        tls = self._tls[stream]
        done = tls.handshake_finished is not None
        seconds = None
        if done and tls.handshake_started is not None and tls.handshake_finished is not None:
            seconds = tls.handshake_finished - tls.handshake_started
        cipher = tls.cipher() if done else None
        return ChannelInfo(
            stream=stream,
            handshake_seconds=seconds,
            resumed=bool(tls.session_reused) if done else None,
            version=tls.version() if done else None,
            cipher=cipher[0] if cipher else None,
            note=self._notes.get(stream, ""),
            started_at=None
            if tls.handshake_started is None
            else tls.handshake_started - self._created,
            finished_at=None
            if tls.handshake_finished is None
            else tls.handshake_finished - self._created,
        )

    async def send_unprotected(self, data: bytes, *, stream: int, ppid: int = 0) -> None:
        """Send a plain SCTP message on a unidirectional stream (RFC 3436 section 7).

        Only streams at or beyond the TLS range may be used this way, and only when the
        association was opened with ``plain_streams=True``.

        Raises:
            ValueError: the stream carries TLS, or plain streams were not enabled.
        """
        if not self._plain_streams:
            raise ValueError("open the association with plain_streams=True to use this")
        if stream < len(self.channels):
            raise ValueError(f"stream {stream} carries TLS (RFC 3436 section 6.2)")
        self.check_usable()
        await self.transport.send_message(data, stream=stream, ppid=ppid)

    async def receive_unprotected(self) -> Message:
        """Receive the next plain message from a unidirectional inbound stream.

        Raises:
            ValueError: plain streams were not enabled.
            trio.EndOfChannel: the association ended gracefully.
        """
        if not self._plain_streams:
            raise ValueError("open the association with plain_streams=True to use this")
        await trio.lowlevel.checkpoint_if_cancelled()
        while not self._plain_queue:
            self.check_usable()
            if self.peer_shut_down:
                raise trio.EndOfChannel
            await self._plain_arrived.park()
        message = self._plain_queue.popleft()
        self.note_consumed(len(message.data))
        await trio.lowlevel.cancel_shielded_checkpoint()
        return message

    async def receive_event(self) -> Event:
        """Wait for the next SCTP notification (association change, peer address change,
        send failure, shutdown, stream reset...). At most the newest 256 are kept."""
        await trio.lowlevel.checkpoint_if_cancelled()
        while not self._events:
            self.check_usable()
            if self.peer_shut_down:
                raise trio.EndOfChannel
            await self._event_arrived.park()
        event = self._events.popleft()
        await trio.lowlevel.cancel_shielded_checkpoint()
        return event

    async def aclose(self) -> None:
        """close_notify on every open channel (waiting for the peer's), then SCTP's
        graceful SHUTDOWN. Idempotent; if cancelled, the association is aborted."""
        if self._state in (_State.CLOSED, _State.CLOSING):
            await trio.lowlevel.checkpoint()
            return
        if self._state is _State.BROKEN:
            self._finish()
            await trio.lowlevel.checkpoint()
            return
        self._state = _State.CLOSING
        try:
            with trio.move_on_after(self._close_timeout):
                async with trio.open_nursery() as nursery:
                    for i in range(len(self.channels)):
                        nursery.start_soon(self._close_channel, i)
            self._demux_scope.cancel()
            await self.transport.aclose()
        except BaseException:
            self.transport.abort()
            raise
        finally:
            self._finish()

    async def abort(self) -> None:
        """Abort the association now (SCTP ABORT). Idempotent; no task is left running."""
        if self._state is not _State.CLOSED:
            self.transport.abort()
            self._finish()
        await trio.lowlevel.checkpoint()

    # -- PipeOwner -----------------------------------------------------------------------

    def check_usable(self) -> None:
        """Raise the association's error if it is broken, or ClosedResourceError."""
        if self._error is not None:
            error = self._error
            raise type(error)(error.detail, stream=error.stream) from error
        if self._state is _State.CLOSED:
            raise trio.ClosedResourceError("the association was closed")

    def note_consumed(self, nbytes: int) -> None:
        """Bytes left a buffer: give the budget back, and let a paused demux go on."""
        self._buffered -= nbytes
        self._drained.unpark_all()

    def pipe_closed(self, pipe: StreamPipe) -> None:
        """Tell the peer this channel is gone (RFC 6525 stream reset), unless the whole
        association is closing anyway."""
        if self._state is _State.OPEN and self._nursery is not None:
            self._nursery.start_soon(self._reset_stream, pipe.stream_id)

    def flush_requested(self, pipe: StreamPipe) -> None:
        """Bytes were queued on ``pipe`` (a handshake flight, session tickets): the
        flusher task sends them."""
        if not self._to_flush:
            self._flush_wanted.unpark_all()
        self._to_flush[pipe] = None

    async def _reset_stream(self, stream: int) -> None:
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await self.transport.reset_outgoing_stream(stream)

    # -- TLSObserver ---------------------------------------------------------------------

    def handshake_completed(self, tls: TLSObject) -> None:
        """Pin the first peer certificate; refuse a different one on any later stream."""
        certificate = tls.getpeercert(binary_form=True)
        if self._pinned_stream is None:
            self._pinned = certificate
            self._pinned_stream = tls.stream_id
        elif certificate != self._pinned:
            self._fail(
                PeerIdentityError(
                    "peer certificate differs from the one presented on stream "
                    f"{self._pinned_stream}",
                    stream=tls.stream_id,
                )
            )
            raise PeerIdentityMismatch(f"peer certificate changed on stream {tls.stream_id}")

    def tls_failed(self, tls: TLSObject, exc: ssl.SSLError, alert: bytes) -> None:
        """A TLS failure on one stream aborts the association (unless it is closing),
        after sending the alert OpenSSL produced, so the peer learns why."""
        if self._state is _State.OPEN:
            error = HandshakeError(f"TLS failure: {exc}", stream=tls.stream_id)
            error.__cause__ = exc
            self._fail(error, alert=(tls.stream_id, alert) if alert else None)

    # -- internals -----------------------------------------------------------------------

    def _fail(self, error: AssociationError, *, alert: tuple[int, bytes] | None = None) -> None:
        if self._state in (_State.BROKEN, _State.CLOSED):
            return
        log.info("aborting association: %s", error)
        self._error = error
        self._state = _State.BROKEN
        # The peer's error will say why (RFC 9260 User-Initiated Abort cause).
        reason = str(error)
        if alert is not None and self._nursery is not None:
            self._nursery.start_soon(self._send_alert_then_abort, *alert, reason)
        else:
            self.transport.abort(reason)
        self._wake_everyone()

    async def _send_alert_then_abort(self, stream: int, alert: bytes, reason: str) -> None:
        try:
            with trio.move_on_after(ALERT_TIMEOUT):
                await self.transport.send_message(alert, stream=stream, ppid=self._pipes[0].ppid)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            self.transport.abort(reason)

    def _finish(self) -> None:
        if self._state is _State.BROKEN:
            self.transport.abort()
        else:
            self._state = _State.CLOSED
        self._demux_scope.cancel()
        self._wake_everyone()

    def _wake_everyone(self) -> None:
        for pipe in self._pipes:
            pipe.wake()
        self._drained.unpark_all()
        self._event_arrived.unpark_all()
        self._plain_arrived.unpark_all()
        self._progress.unpark_all()

    def _over_budget(self, pipe: StreamPipe | None) -> bool:
        return self._buffered > self._association_budget or (
            pipe is not None and pipe.buffered > self._stream_budget
        )

    async def _demux(self) -> None:
        with self._demux_scope:
            try:
                transport = self.transport
                while True:
                    item = await transport.receive()
                    # Then take in, without yielding, what else has arrived (up to a
                    # bound, so that readers are not kept waiting): the readers it
                    # wakes all run in the next scheduling round, and the demux runs
                    # once per batch rather than once per message.
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
            except trio.EndOfChannel:
                self.peer_shut_down = True
                for pipe in self._pipes:
                    pipe.finish()
                self._wake_everyone()
            except trio.ClosedResourceError:
                pass
            except AssociationError as exc:
                self._fail(exc)
            except trio.BrokenResourceError as exc:
                self._fail(AssociationLostError(str(exc) or "the association failed"))

    def _notify(self, event: Event) -> None:
        if isinstance(event, StreamReset):
            for stream in event.streams:
                if stream < len(self._pipes):
                    self._pipes[stream].finish()
            self._progress.unpark_all()
        if isinstance(event, ShutdownReceived):
            log.debug("peer started a graceful shutdown")
        self._events.append(event)
        self._event_arrived.unpark_all()

    def _dispatch(self, message: Message) -> bool:
        """Hand one message to its stream (never waits). Returns ``True`` when the
        buffers are over budget under the "pause" policy: the demux must then
        :meth:`_pause` before it reads on."""
        stream = message.stream
        if stream < len(self._pipes):
            if message.unordered:
                self._fail(
                    RemoteProtocolError(
                        "unordered message on a TLS stream (RFC 3436 section 6.2)",
                        stream=stream,
                    )
                )
                return False
            pipe: StreamPipe | None = self._pipes[stream]
            assert pipe is not None
            if pipe.closed:
                return False  # closed locally: discarded
            tls = self._tls[stream]
            if self._first_data and self._first_data[stream] is None:
                self._first_data[stream] = trio.current_time()
                if self._watch_deadline == math.inf:
                    self._watch.unpark_all()
            if tls.driven and tls.handshake_finished is None:
                # A flight comes as several messages (one per record): collect it and
                # step OpenSSL once, when no more has arrived (see _flusher).
                tls.feed_handshake(message.data)
                self._dispatched += 1
                self._unstepped += len(message.data)
                if not (self._to_step or self._to_flush or self._to_confirm):
                    self._flush_wanted.unpark_all()
                self._to_step[stream] = None
                if self._unstepped > STEP_AT:
                    self._step_pending()
                return False
            pipe.feed(message.data)
        elif self._plain_streams:
            pipe = None
            self._plain_queue.append(message)
            self._plain_arrived.unpark_all()
        else:
            self._fail(
                RemoteProtocolError(
                    f"data on stream {stream}, beyond the TLS streams 0..{len(self._pipes) - 1}"
                    " (RFC 3436 section 7; pass plain_streams=True to accept it)",
                    stream=stream,
                )
            )
            return False
        self._buffered += len(message.data)
        if not self._over_budget(pipe) or self._state is not _State.OPEN:
            return False
        if self._overflow == "abort":
            self._fail(
                BufferLimitError(
                    f"{pipe.buffered if pipe else self._buffered} unread bytes exceed the budget",
                    stream=stream,
                )
            )
            return False
        self._paused_on = pipe
        return True

    async def _pause(self) -> None:
        """The "pause" policy: stop reading the transport until the readers are back
        under budget; SCTP's window pushes back on the peer meanwhile."""
        pipe = self._paused_on
        while self._over_budget(pipe) and self._state is _State.OPEN:
            await self._drained.park()
        self._paused_on = None

    def _step_handshake(self, stream: int, data: bytes | None) -> None:
        """Step one association-driven handshake (see _tls.py); never raises."""
        try:
            done = self._tls[stream].step_handshake(data)
        except ssl.SSLError as exc:
            # Reported by the TLS object already (a failure, or a peer identity that
            # differs), unless OpenSSL called it something ordinary.
            if self._error is None:
                error = HandshakeError(f"handshake failed: {exc}", stream=stream)
                error.__cause__ = exc
                self._fail(error)
            return
        if not done:
            return
        if stream in self._awaiting:
            self._awaiting.discard(stream)
            if not self._awaiting:
                self._progress.unpark_all()
        elif self.server_side:
            self._to_confirm.append(stream)
            self._flush_wanted.unpark_all()

    def _step_pending(self) -> None:
        """Step every association-driven handshake that was fed messages."""
        while self._to_step:
            stream = next(iter(self._to_step))
            del self._to_step[stream]
            tls = self._tls[stream]
            if tls.driven and tls.handshake_finished is None:
                self._step_handshake(stream, None)
        self._unstepped = 0

    async def _confirm_handshake(self, stream: int) -> None:
        """Let the channel's SSLStream see the handshake the association completed (a
        step that finds it done), so that e.g. ``channel.version()`` works at once."""
        await self.channels[stream].do_handshake()

    async def _drive_handshakes(self, streams: Sequence[int]) -> None:
        """Client: run the handshakes of ``streams`` (all at once), driven by the
        association, and wait for all; any failure is the association's."""
        for stream in streams:
            self._awaiting.add(stream)
            self._tls[stream].drive()
        for stream in streams:
            self._step_handshake(stream, None)  # the ClientHello
            if self._error is not None:
                break
        while True:
            self.check_usable()
            if not self._awaiting:
                break
            for stream in self._awaiting:
                if self._pipes[stream].peer_finished:
                    # The peer reset the stream or shut the association down mid-way.
                    error = HandshakeError(
                        "the peer ended the stream during the handshake", stream=stream
                    )
                    self._fail(error)
                    raise error
            await self._progress.park()
        for stream in streams:
            try:
                # Our last flight (our Finished, in TLS 1.3 and in resumptions) must be
                # on its way before the channel counts as ready, as after do_handshake().
                await self._pipes[stream].flush()
                await self._confirm_handshake(stream)
            except trio.BrokenResourceError as exc:
                self._raise_setup_error(stream, exc)
            except trio.ClosedResourceError:
                # Closed under us because the association failed: report that failure.
                if self._error is None:
                    raise
                self.check_usable()

    async def _flusher(self, stepper: bool) -> None:
        """Step the association-driven handshakes that received messages (``stepper``
        only); send what was queued on pipes outside any send (handshake flights,
        session tickets), each pipe's bytes in order and ahead of its later sends; let the
        channels' SSLStreams see the handshakes completed this way (server side).

        A few of these run at once, sharing the queues: each send is a checkpoint, and
        the messages several flushers send in one scheduling round leave together (in one
        SCTP packet, over UDP), where a lone flusher would send them one by one."""
        while True:
            while not ((stepper and self._to_step) or self._to_flush or self._to_confirm):
                await self._flush_wanted.park()
            if stepper and self._to_step:
                # Let the demux take in what has arrived already, then step each
                # channel once for all of it: OpenSSL costs more per step than per byte.
                seen = -1
                while seen != self._dispatched:
                    seen = self._dispatched
                    await trio.lowlevel.checkpoint()
                self._step_pending()
                continue
            # A closed pipe, a stream the peer reset, or the association gone: the
            # failure, if any, is recorded already and reaches the channel's users.
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                if self._to_flush:
                    pipe = next(iter(self._to_flush))
                    del self._to_flush[pipe]
                    await pipe.flush()
                else:
                    await self._confirm_handshake(self._to_confirm.popleft())

    async def _watchdog(self) -> None:
        """Server: abort the association if a channel's handshake is not complete
        ``handshake_timeout`` after its first byte (a client that stalls)."""
        timeout = self._handshake_timeout
        while True:
            now = trio.current_time()
            deadline = math.inf
            for stream, first in enumerate(self._first_data):
                if first is None or self._tls[stream].handshake_finished is not None:
                    continue
                if first + timeout <= now:
                    self._fail(
                        HandshakeError(
                            f"handshake did not complete within {timeout} s", stream=stream
                        )
                    )
                    return
                deadline = min(deadline, first + timeout)
            self._watch_deadline = deadline
            with trio.move_on_at(deadline):
                await self._watch.park()

    def _raise_setup_error(self, stream: int, exc: BaseException) -> None:
        if isinstance(exc, AssociationError):
            # The association itself failed (aborted, lost) while shaking hands.
            self._fail(exc)
            self.check_usable()
        cause = exc.__cause__
        if isinstance(cause, ssl.SSLError) and not isinstance(cause, PeerIdentityMismatch):
            # The most specific account: TLS failed on this stream (e.g. the peer's
            # alert arrived just before its ABORT).
            error: AssociationError = HandshakeError(f"handshake failed: {cause}", stream=stream)
            self._fail(error)
            raise error from cause
        if self._error is not None:
            self.check_usable()
        error = HandshakeError(f"handshake failed: {cause or exc}", stream=stream)
        self._fail(error)
        raise error from exc

    async def _client_handshakes(self) -> None:
        cache, key = self._session_cache, self._session_key
        cached = cache.get(self._ssl_context, key) if cache is not None else None
        if self._handshake == "lazy":
            if cached is not None:
                for channel in self.channels:
                    channel.session = cached
            await trio.lowlevel.checkpoint()
            return
        if self._handshake == "parallel":
            if cached is not None:
                for channel in self.channels:
                    channel.session = cached
            await self._drive_handshakes(range(len(self.channels)))
            self._remember_session(0)
            return
        # "resume": full (or cached) handshake on stream 0, then the rest resume it.
        if cached is not None:
            self.channels[0].session = cached
        await self._drive_handshakes([0])
        session = await self._resumable_session()
        for stream in range(1, len(self.channels)):
            if session is not None:
                self.channels[stream].session = session
            else:
                self._notes[stream] = "full handshake: no resumable session from stream 0"
        await self._drive_handshakes(range(1, len(self.channels)))

    def _remember_session(self, stream: int, session: ssl.SSLSession | None = None) -> None:
        if self._session_cache is None or not self.channels:
            return
        tls = self._tls[stream]
        if session is None:
            # Each read of .session copies it (serialises and parses it, certificate
            # included): read it once.
            session = tls.session
        if is_resumable(session, tls.version()):
            assert session is not None
            self._session_cache.put(self._ssl_context, self._session_key, session)

    async def _resumable_session(self) -> ssl.SSLSession | None:
        if len(self.channels) == 1:
            return None  # nothing to resume here; don't wait for a ticket
        tls = self._tls[0]
        version = tls.version()
        session: ssl.SSLSession | None = tls.session
        if version == "TLSv1.3" and not is_resumable(session, version):
            session = await self._harvest_ticket()
        if not is_resumable(session, version):
            return None
        self._remember_session(0, session)
        return session

    async def _harvest_ticket(self) -> ssl.SSLSession | None:
        """Read stream 0 until OpenSSL has processed a TLS 1.3 session ticket, keeping
        any application data for the user (see _tls.py), for at most the ticket
        timeout: some peers never send a ticket. Returns stream 0's session then."""
        channel, tls, pipe = self.channels[0], self._tls[0], self._pipes[0]
        timeout = self._ticket_timeout
        if timeout is None:
            elapsed = (tls.handshake_finished or 0.0) - (tls.handshake_started or 0.0)
            # A ticket follows the server's handshake by about one round trip, which the
            # handshake itself took several of: scale with it, within sane bounds.
            timeout = min(max(3 * elapsed, 0.05), 5.0)

        session: ssl.SSLSession | None = None
        with trio.move_on_after(timeout) as scope:

            def stop_once_ticket_processed() -> None:
                # (Reading .session copies it: not again once we have a ticket.)
                nonlocal session
                if not is_resumable(session, "TLSv1.3"):
                    session = channel.session
                if is_resumable(session, "TLSv1.3"):
                    scope.cancel()

            pipe.on_receive_wait = stop_once_ticket_processed
            try:
                while tls.pushed_back < self._stream_budget:
                    data = await channel.receive_some()
                    if not data:
                        break
                    tls.unread(data)
                    stop_once_ticket_processed()
            except trio.BrokenResourceError as exc:
                self._raise_setup_error(0, exc)
            finally:
                pipe.on_receive_wait = None
        if not is_resumable(session, "TLSv1.3"):
            session = channel.session
        if not is_resumable(session, "TLSv1.3"):
            log.debug("no TLS 1.3 session ticket on stream 0 within %.3f s", timeout)
        return session

    async def _close_channel(self, stream: int) -> None:
        channel, pipe, tls = self.channels[stream], self._pipes[stream], self._tls[stream]
        if pipe.closed:
            return
        if tls.handshake_finished is None or self._error is not None:
            # Never shook hands (lazy, unused): nothing to close at the TLS level.
            await pipe.aclose()
            return
        try:
            # close_notify, then wait for the peer's.
            await channel.unwrap()
        except trio.BusyResourceError:
            # The user is reading or writing it right now: send close_notify only.
            await channel.aclose()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            await pipe.aclose()

    async def _start(self, nursery: trio.Nursery) -> None:
        self._nursery = nursery
        for i in range(FLUSHERS):
            nursery.start_soon(self._flusher, i == 0)
        nursery.start_soon(self._demux)
        try:
            if self.server_side:
                nursery.start_soon(self._watchdog)
                await trio.lowlevel.checkpoint()
            else:
                await self._client_handshakes()
        except AssociationError:
            raise
        except trio.BrokenResourceError as exc:
            self._raise_setup_error(0, exc)


@asynccontextmanager
async def run_association(
    association: SecureAssociation,
    *,
    handshake_timeout: float | None = None,
) -> AsyncIterator[SecureAssociation]:
    """Run ``association``: start its demux, run its handshake strategy (within
    ``handshake_timeout`` seconds, by default the association's), yield it, then close
    it (gracefully if the body returned, by abort if it raised)."""
    if handshake_timeout is None:
        handshake_timeout = association._handshake_timeout
    started = time.perf_counter()
    with unwrap_single_exception():
        async with trio.open_nursery() as nursery:
            try:
                with trio.move_on_after(handshake_timeout) as scope:
                    await association._start(nursery)
                if scope.cancelled_caught:
                    # Name a stream still waiting, where there is one.
                    waiting = min(association._awaiting, default=None)
                    error = HandshakeError(
                        f"handshakes did not complete within {handshake_timeout} s",
                        stream=waiting,
                    )
                    association._fail(error)
                    raise error
                log.debug("association ready in %.3f s", time.perf_counter() - started)
                yield association
            except BaseException:
                await association.abort()
                raise
            else:
                await association.aclose()
            finally:
                nursery.cancel_scope.cancel()
