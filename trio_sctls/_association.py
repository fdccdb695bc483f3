"""SecureAssociation: RFC 3436 TLS channels over one SCTP association.

Theory of operation
===================

Shape. One SCTP association carries ``n = min(inbound, outbound)`` bidirectional streams
(RFC 3436 section 3.1); stream ids ``0..n-1`` each run their own TLS connection, and the
initiator of the association is the TLS client on all of them. Each channel is an
ordinary :class:`trio.SSLStream` over a :class:`~trio_sctls._pipe.StreamPipe`. Streams
beyond ``n`` are unidirectional and cannot carry TLS (section 7); they are reachable only
through the explicit plain-message API when the user opts in.

Parts, by job. :class:`SecureAssociation` is a facade: it builds the channels, pins the
peer's identity, closes and aborts, and answers the user. Two workers do the rest, and
the three share one :class:`~trio_sctls._lifecycle.Lifecycle` (state, error, failure):

* the demultiplexer (:mod:`trio_sctls._demux`): one task reads the transport and hands
  each message to its channel, a queue, or a handshake, within the byte budgets;
* the handshake driver (:mod:`trio_sctls._handshakes`): the strategies of section 8,
  the tasks that step OpenSSL and send its flights, the server's watchdog.

The demux calls the driver only for a message to a handshake the association drives
and for each stream's first byte; the driver reads the pipes' state. Neither calls the
facade: they fail the shared lifecycle, and everyone waiting anywhere wakes and finds
the error.

Failure. Any TLS failure on any stream, a peer certificate that differs from the first
one seen, an unordered message on a TLS stream (section 6.2) or data on a stream beyond
the TLS range without opt-in, aborts the whole association (an SCTP ABORT, so the peer
sees a clean error too), records a typed :class:`AssociationError` naming the stream, and
wakes every reader and writer so each gets it. Background tasks never raise into their
nursery: errors belong to the association, and surface on its channels.

Hooks into TLS. See :mod:`trio_sctls._tls`: each SSLStream's TLS object reports
handshake completion (the peer certificate is pinned or checked right there, by
:class:`_Identity`, before any application byte is sent or returned) and failures.

Running. :func:`run_association` runs the background tasks in its own nursery, the
client's handshake strategy within ``handshake_timeout``, reports the association ready
(``task_status.started``), and returns once the association is closed or broken; a
listener can so run accepted associations in its own nursery. :func:`wrap_transport` is
that as an ``async with`` block.

Close. ``aclose()`` sends close_notify on every open channel and waits (up to
``close_timeout``) for the peer's, as RFC 3436 peers do before shutting SCTP down: late
close_notify records would otherwise be lost in the shutdown. Then it runs SCTP's
graceful SHUTDOWN. ``abort()`` sends an SCTP ABORT. Both are idempotent; a cancelled
``aclose()`` aborts, so nothing is left half-open; neither leaves a task running.
"""

from __future__ import annotations

import logging
import ssl
import time
from collections.abc import AsyncIterator, Hashable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Literal, cast, final

import trio

from ._demux import Demux
from ._errors import AssociationError, HandshakeError, PeerIdentityError
from ._handshakes import Channel, HandshakeDriver
from ._lifecycle import Lifecycle, State
from ._options import AssociationOptions
from ._tls import ContextAdapter, PeerIdentityMismatch, TLSObject
from ._util import OverTransport, unwrap_single_exception
from .transport import Event, Message, MessageTransport

log = logging.getLogger("trio_sctls")


@dataclass(frozen=True, slots=True)
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


@dataclass(frozen=True, slots=True)
class AssociationStatistics:
    """A snapshot of an association's state and buffers (see
    :meth:`SecureAssociation.statistics`), like :meth:`trio.MemoryReceiveChannel.statistics`.

    Attributes:
        state: ``"open"``, ``"closing"`` (``aclose()`` under way), ``"closed"`` (closed
            or aborted by us) or ``"broken"`` (failed: see
            :attr:`SecureAssociation.error`).
        buffered: unread bytes the association holds, all streams and plain messages
            together (what ``association_budget`` bounds).
        buffered_per_stream: unread bytes per TLS stream, indexed by stream id (what
            ``stream_budget`` bounds).
        paused_by: why the demultiplexer stopped reading the transport under the
            ``"pause"`` policy: the stream id whose budget is exceeded,
            ``"association"`` for the association's budget, or ``None`` if it is not
            paused.
        handshakes_completed: channels whose TLS handshake completed.
        handshakes_in_progress: channels whose handshake started and has not completed.
        handshakes_not_started: channels whose handshake has not started (``"lazy"``
            channels not used yet).
        plain_messages_queued: plain messages received and not yet taken with
            :meth:`SecureAssociation.receive_unprotected`.
        events_queued: notifications not yet taken with
            :meth:`SecureAssociation.receive_event`.
    """

    state: Literal["open", "closing", "closed", "broken"]
    buffered: int
    buffered_per_stream: tuple[int, ...]
    paused_by: int | Literal["association"] | None
    handshakes_completed: int
    handshakes_in_progress: int
    handshakes_not_started: int
    plain_messages_queued: int
    events_queued: int


@final
class _Identity:
    """Pins the peer's certificate at the first completed handshake and refuses a
    different one on any later stream; turns a TLS failure into the association's
    (the :class:`~trio_sctls._tls.TLSObserver` of every channel)."""

    def __init__(self, lifecycle: Lifecycle) -> None:
        self._life = lifecycle
        self.certificate: bytes | None = None
        self._stream: int | None = None

    def handshake_completed(self, tls: TLSObject) -> None:
        certificate = tls.getpeercert(binary_form=True)
        if self._stream is None:
            self.certificate = certificate
            self._stream = tls.stream_id
        elif certificate != self.certificate:
            self._life.fail(
                PeerIdentityError(
                    f"peer certificate differs from the one presented on stream {self._stream}",
                    stream=tls.stream_id,
                )
            )
            raise PeerIdentityMismatch(f"peer certificate changed on stream {tls.stream_id}")

    def tls_failed(self, tls: TLSObject, exc: ssl.SSLError, alert: bytes) -> None:
        # A TLS failure on one stream aborts the association (unless it is closing),
        # after sending the alert OpenSSL produced, so the peer learns why.
        if self._life.state is State.OPEN:
            error = HandshakeError(f"TLS failure: {exc}", stream=tls.stream_id)
            error.__cause__ = exc
            self._life.fail(error, alert=(tls.stream_id, alert) if alert else None)


@final
class SecureAssociation(OverTransport):
    """TLS channels (RFC 3436) over one SCTP association.

    Made by :func:`~trio_sctls.open_association` and :func:`~trio_sctls.serve`, or over
    a transport you already have by :func:`wrap_transport` (or this constructor and
    :func:`run_association`). One channel per bidirectional stream; the association's
    initiator is the TLS client on every one.

    Args:
        transport: the SCTP association to run TLS over (established, not yet used).
        ssl_context: the TLS context of every channel.
        options: how the channels behave (strategy, budgets, timeouts); default
            :class:`~trio_sctls.AssociationOptions` ``()``.
        server_side: whether we are the TLS server (the association's responder).
        server_hostname: (client) the name to verify in the server's certificate.
        session_key: (client) what identifies the server in ``options.session_cache``,
            e.g. ``(host, port, server_hostname)``.

    Attributes:
        channels: one :class:`trio.SSLStream` per bidirectional stream; the index is the
            SCTP stream id.
        transport: the SCTP association underneath.
        server_side: whether we are the TLS server (the association's responder).
        options: the options it was made with.
    """

    def __init__(
        self,
        transport: MessageTransport,
        ssl_context: ssl.SSLContext,
        options: AssociationOptions | None = None,
        *,
        server_side: bool,
        server_hostname: str | None = None,
        session_key: Hashable = None,
    ) -> None:
        options = options if options is not None else AssociationOptions()
        self._created = time.perf_counter()
        super().__init__(transport)
        self.server_side = server_side
        self.options = options
        self._running = False
        self._life = Lifecycle(transport, ppid=options.ppid)
        self._identity = _Identity(self._life)
        self._demux = Demux(transport, self._life, options, server_side=server_side)
        self._tls: list[TLSObject] = []
        self.channels: list[Channel] = []
        for pipe in self._demux.pipes:
            adapter = ContextAdapter(ssl_context, pipe=pipe, observer=self._identity)
            channel: Channel = trio.SSLStream(
                cast(trio.abc.Stream, pipe),
                cast(ssl.SSLContext, adapter),
                server_hostname=None if server_side else server_hostname,
                server_side=server_side,
            )
            assert adapter.created is not None
            self._tls.append(adapter.created)
            self.channels.append(channel)
        self._handshakes = HandshakeDriver(
            self._life,
            self._demux.pipes,
            self.channels,
            self._tls,
            options,
            ssl_context=ssl_context,
            server_side=server_side,
            session_key=session_key,
        )
        self._demux.attach(self._handshakes, self._tls)

    # -- what it is --------------------------------------------------------------------

    @property
    def error(self) -> AssociationError | None:
        """Why the association broke, or ``None``."""
        return self._life.error

    @property
    def peer_certificate(self) -> bytes | None:
        """The peer's certificate (DER) pinned at the first completed handshake."""
        return self._identity.certificate

    def channel_info(self, stream: int) -> ChannelInfo:
        """Handshake details of one channel (see :class:`ChannelInfo`)."""
        tls = self._tls[stream]
        started, finished = tls.handshake_started, tls.handshake_finished
        done = finished is not None
        cipher = tls.cipher() if done else None
        return ChannelInfo(
            stream=stream,
            handshake_seconds=None if started is None or finished is None else finished - started,
            resumed=bool(tls.session_reused) if done else None,
            version=tls.version() if done else None,
            cipher=cipher[0] if cipher else None,
            note=self._handshakes.notes.get(stream, ""),
            started_at=None if started is None else started - self._created,
            finished_at=None if finished is None else finished - self._created,
        )

    def statistics(self) -> AssociationStatistics:
        """A snapshot of the association's state, buffers and handshakes (see
        :class:`AssociationStatistics`)."""
        demux = self._demux
        paused_by: int | Literal["association"] | None = None
        if demux.paused_on is not None:
            paused_by = demux.paused_on.stream_id
        elif demux.paused:
            paused_by = "association"
        finished = sum(tls.handshake_finished is not None for tls in self._tls)
        started = sum(tls.handshake_started is not None for tls in self._tls)
        return AssociationStatistics(
            state=self._life.state.value,
            buffered=demux.buffered,
            buffered_per_stream=tuple(pipe.buffered for pipe in demux.pipes),
            paused_by=paused_by,
            handshakes_completed=finished,
            handshakes_in_progress=started - finished,
            handshakes_not_started=len(self._tls) - started,
            plain_messages_queued=len(demux.plain_queue),
            events_queued=len(demux.events),
        )

    # -- plain messages and notifications --------------------------------------------------

    async def send_unprotected(self, data: bytes, *, stream: int, ppid: int = 0) -> None:
        """Send a plain SCTP message on a unidirectional stream (RFC 3436 section 7).

        Only streams at or beyond the TLS range may be used this way, and only when the
        association was opened with ``plain_streams=True``.

        Args:
            data: the message.
            stream: the SCTP stream id, at least ``len(channels)``.
            ppid: the payload protocol identifier.

        Raises:
            ValueError: the stream carries TLS, or plain streams were not enabled.
            AssociationError: the association broke.
            trio.ClosedResourceError: the association was closed.
        """
        if not self.options.plain_streams:
            raise ValueError("open the association with plain_streams=True to use this")
        if stream < len(self.channels):
            raise ValueError(f"stream {stream} carries TLS (RFC 3436 section 6.2)")
        self._life.check_usable()
        await self.transport.send_message(data, stream=stream, ppid=ppid)

    async def receive_unprotected(self) -> Message:
        """Receive the next plain message from a unidirectional inbound stream.

        Raises:
            ValueError: plain streams were not enabled.
            trio.EndOfChannel: the association ended gracefully.
            AssociationError: the association broke.
            trio.ClosedResourceError: the association was closed.
        """
        if not self.options.plain_streams:
            raise ValueError("open the association with plain_streams=True to use this")
        return await self._demux.receive_plain()

    async def receive_event(self) -> Event:
        """Wait for the next SCTP notification (association change, peer address change,
        send failure, shutdown, stream reset...). At most the newest 256 are kept.

        Raises:
            trio.EndOfChannel: the association ended gracefully.
            AssociationError: the association broke.
            trio.ClosedResourceError: the association was closed.
        """
        return await self._demux.receive_event()

    # -- ending ------------------------------------------------------------------------------

    async def aclose(self) -> None:
        """close_notify on every open channel (waiting up to ``close_timeout`` for the
        peer's), then SCTP's graceful SHUTDOWN. Idempotent; if cancelled, the
        association is aborted."""
        state = self._life.state
        if state in (State.CLOSED, State.CLOSING):
            await trio.lowlevel.checkpoint()
            return
        if state is State.BROKEN:
            self._finish()
            await trio.lowlevel.checkpoint()
            return
        self._life.state = State.CLOSING
        try:
            with trio.move_on_after(self.options.close_timeout):
                async with trio.open_nursery() as nursery:
                    for i in range(len(self.channels)):
                        nursery.start_soon(self._close_channel, i)
            self._demux.stop()
            await self.transport.aclose()
        except BaseException:
            self.transport.abort()
            raise
        finally:
            self._finish()

    def abort(self, reason: str = "") -> None:
        """Abort the association now: an SCTP ABORT (carrying ``reason`` where the
        transport can), and everyone using it wakes up to
        :class:`trio.ClosedResourceError`. Idempotent; no task is left running."""
        if self._life.state is not State.CLOSED:
            self.transport.abort(reason)
            self._finish()

    async def _close_channel(self, stream: int) -> None:
        channel, pipe, tls = self.channels[stream], self._demux.pipes[stream], self._tls[stream]
        if pipe.closed:
            return
        if tls.handshake_finished is None or self._life.error is not None:
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

    def _finish(self) -> None:
        self._life.finish()
        self._demux.stop()

    # -- running -------------------------------------------------------------------------

    async def _run(self, task_status: trio.TaskStatus[SecureAssociation]) -> None:
        """See :func:`run_association`."""
        if self._running:
            raise RuntimeError("this association is running already")
        self._running = True
        started = time.perf_counter()
        life = self._life
        try:
            # (unwrapped: set-up errors reach the caller as raised; the background
            # tasks never raise)
            with unwrap_single_exception():
                await self._run_in_nursery(task_status, started)
        except BaseException:
            self.abort()
            raise
        finally:
            life.nursery = None

    async def _run_in_nursery(
        self, task_status: trio.TaskStatus[SecureAssociation], started: float
    ) -> None:
        timeout = self.options.handshake_timeout
        life = self._life
        async with trio.open_nursery() as nursery:
            life.nursery = nursery
            self._handshakes.start(nursery)
            nursery.start_soon(self._demux.run)
            with trio.move_on_after(timeout) as scope:
                await self._handshakes.set_up()
            if scope.cancelled_caught:
                # Name a stream still waiting, where there is one.
                error = HandshakeError(
                    f"handshakes did not complete within {timeout} s",
                    stream=self._handshakes.waiting_stream,
                )
                life.fail(error)
                raise error
            log.debug("association ready in %.3f s", time.perf_counter() - started)
            task_status.started(self)
            # The demux and the flushers serve the channels until the end (aclose()
            # needs them to take in the peer's close_notify).
            await life.ended.wait()
            nursery.cancel_scope.cancel()


async def run_association(
    association: SecureAssociation,
    *,
    task_status: trio.TaskStatus[SecureAssociation] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run ``association`` until it is closed, aborted or broken.

    Starts its background tasks (the demultiplexer, the handshake flushers, on the
    server the handshake watchdog) in a nursery of its own, runs the client's handshake
    strategy within ``options.handshake_timeout``, then reports the association ready
    through ``task_status`` and keeps the background tasks running until
    :meth:`~SecureAssociation.aclose`, :meth:`~SecureAssociation.abort` or a failure
    ends it. A listener runs accepted associations in its own nursery this way::

        association = await nursery.start(run_association, association)

    Args:
        association: a new association (each runs once).
        task_status: receives ``association`` once it is ready.

    Raises:
        HandshakeError: a handshake failed or timed out (the error names a stream).
        AssociationError: the association failed while being set up.
        RuntimeError: the association is running already.

    If set-up fails the association is aborted before the error is raised; if this is
    cancelled, the association is aborted.
    """
    await association._run(task_status)


@asynccontextmanager
async def wrap_transport(
    transport: MessageTransport,
    ssl_context: ssl.SSLContext,
    options: AssociationOptions | None = None,
    *,
    server_side: bool,
    server_hostname: str | None = None,
    session_key: Hashable = None,
) -> AsyncIterator[SecureAssociation]:
    """Run RFC 3436 TLS channels over an SCTP association you already have.

    For a transport you set up yourself (e.g. with :func:`~trio_sctls.open_transport`
    or accepted from a :class:`~trio_sctls.MessageListener`): builds a
    :class:`SecureAssociation` over it, runs it (:func:`run_association`) and yields it
    once the client's handshake strategy completed. When the block ends the association
    is closed gracefully (close_notify on every channel, then SCTP SHUTDOWN); if the
    block raises, the association is aborted and the exception propagates as raised.

    Example::

        async with trio_sctls.open_transport("198.51.100.7", 5868) as sctp:
            async with trio_sctls.wrap_transport(
                sctp, ssl_context, server_side=False, server_hostname="peer.example"
            ) as assoc:
                await assoc.channels[0].send_all(b"hello")

    Args:
        transport: the established SCTP association, not yet used by anything else.
        ssl_context: the TLS context of every channel (a server context with a
            certificate when ``server_side``).
        options: how the channels behave (:class:`~trio_sctls.AssociationOptions`).
        server_side: whether we are the TLS server; RFC 3436 makes the association's
            responder the server on every stream.
        server_hostname: (client) the name to verify in the server's certificate.
        session_key: (client) what identifies the server in ``options.session_cache``,
            e.g. ``(host, port, server_hostname)``; ``None`` shares one entry.

    Raises:
        HandshakeError: a handshake failed or timed out (the error names the stream).
        AssociationError: the association failed while being set up.
    """
    association = SecureAssociation(
        transport,
        ssl_context,
        options,
        server_side=server_side,
        server_hostname=server_hostname,
        session_key=session_key,
    )
    with unwrap_single_exception():
        async with trio.open_nursery() as nursery:
            await nursery.start(run_association, association)
            try:
                yield association
            except BaseException:
                association.abort()
                raise
            else:
                await association.aclose()


__all__ = [
    "AssociationStatistics",
    "Channel",
    "ChannelInfo",
    "SecureAssociation",
    "run_association",
    "wrap_transport",
]
