"""The handshake driver: strategies, flushers, ticket harvest and the server's watchdog.

Theory of operation
===================

Strategies (RFC 3436 section 8). ``parallel``: every channel at once. ``resume``: a full
handshake on stream 0, then the others resume its session (abbreviated handshakes),
falling back to full ones when no resumable session appears in time (a TLS 1.3 peer may
never send a ticket). ``lazy``: each channel shakes hands on first use; opt-in only,
since a peer that finishes every handshake before reading any data would wait forever.
The server side shakes hands on all channels in the background and never waits for them
before calling the handler, so it pairs with any client strategy.

Who drives a handshake. Not a task per channel: this object (see :mod:`trio_sctls._tls`).
The demux hands each handshake message straight to its channel's TLS object
(:meth:`HandshakeDriver.take_message`); a single flusher task steps OpenSSL once per
channel when the demux has taken in what arrived (a flight is several messages, and
each OpenSSL step costs more than its bytes), and :data:`FLUSHERS` tasks send the
flights OpenSSL wrote, pipe by pipe. The client's strategies wait for the channels they
started; the server's handshakes are watched by one watchdog task (each channel must
complete within ``handshake_timeout`` of its first byte, and some channel must receive
its first byte within ``handshake_timeout`` of the association's start). Once done, each channel's
SSLStream is stepped once so that it knows (``version()`` etc. work). A channel the user
touches while the association drives its handshake (a server handler reading at once)
waits for it in Trio and completes it there (see _tls.py); a channel the association
does not drive (``lazy``) is driven by Trio's SSLStream, as any SSLStream is. Where it
goes, the flights and the result are the same; what it saves is Trio's per-flight task
switches, sends and receives for every channel, which were most of the set-up's CPU
beyond OpenSSL's, and it lets one flush carry the flights of every channel.

Failures are the association's (:meth:`Lifecycle.fail
<trio_sctls._lifecycle.Lifecycle.fail>`), named after the stream they happened on.
"""

from __future__ import annotations

import contextlib
import logging
import math
import ssl
from collections import deque
from collections.abc import Hashable, Sequence
from typing import NoReturn, TypeAlias, final

import trio

from ._errors import AssociationError, HandshakeError
from ._lifecycle import Lifecycle
from ._options import AssociationOptions
from ._pipe import StreamPipe
from ._tls import PeerIdentityMismatch, TLSObject, is_resumable

log = logging.getLogger("trio_sctls")

#: The type of a channel: a plain Trio TLS stream (over our per-stream pipe).
Channel: TypeAlias = trio.SSLStream[trio.abc.Stream]

#: Handshake bytes the association-driven channels may hold unprocessed, together,
#: before they are stepped at once rather than when the demux runs out of messages (see
#: _flusher): a peer that keeps the demux busy cannot make them pile up.
STEP_AT = 256 * 1024
#: Tasks that send the handshake flights the association produces (see _flusher).
FLUSHERS = 4
#: Scheduling rounds in a row in which the demux took in no handshake message before
#: the handshakes it fed are stepped (see HandshakeDriver._settle).
SETTLE_ROUNDS = 2


@final
class HandshakeDriver:
    """Runs the handshakes of one association's channels (see the module docstring).

    Args:
        lifecycle: the association's shared state.
        pipes: the channels' pipes, by stream id.
        channels: the channels, by stream id.
        tls: the channels' TLS objects, by stream id.
        options: strategy, session cache, timeouts.
        ssl_context: the context the channels were made from (the session cache's key).
        server_side: whether we are the TLS server.
        session_key: (client) what identifies the server in the session cache.
    """

    def __init__(
        self,
        lifecycle: Lifecycle,
        pipes: Sequence[StreamPipe],
        channels: Sequence[Channel],
        tls: Sequence[TLSObject],
        options: AssociationOptions,
        *,
        ssl_context: ssl.SSLContext,
        server_side: bool,
        session_key: Hashable,
    ) -> None:
        self._life = lifecycle
        self._pipes = pipes
        self._channels = channels
        self._tls = tls
        self._options = options
        self._ssl_context = ssl_context
        self._server_side = server_side
        self._session_key = session_key
        #: How the strategy treated each channel, by stream id (see ChannelInfo.note).
        self.notes: dict[int, str] = {}
        # Pipes with bytes queued outside any send (an ordered set), and server channels
        # whose handshake the association completed, for the flushers.
        self._to_flush: dict[StreamPipe, None] = {}
        self._to_confirm: deque[int] = deque()
        # Association-driven channels with handshake messages not yet stepped, and how
        # many messages the demux handed over (the stepper waits for it to settle).
        self._to_step: dict[int, None] = {}
        self._unstepped = 0
        self._taken = 0
        self._flush_wanted = trio.lowlevel.ParkingLot()
        # Streams whose association-driven handshake the client waits for.
        self._awaiting: set[int] = set()
        self._progress = trio.lowlevel.ParkingLot()
        # Server: when each stream's first byte arrived (trio clock), for the watchdog.
        self._first_data: list[float | None] = [None] * len(channels)
        self._watch_deadline = math.inf
        self._watch = trio.lowlevel.ParkingLot()
        lifecycle.add_waker(self.wake)
        if server_side:
            # The server's handshakes run as their ClientHellos arrive, driven by the
            # demux until the handler uses a channel (see _tls.py).
            for obj in tls:
                obj.drive()

    @property
    def waiting_stream(self) -> int | None:
        """The lowest stream whose handshake the client still waits for, if any."""
        return min(self._awaiting, default=None)

    # -- from the demux --------------------------------------------------------------------

    def take_message(self, stream: int, data: bytes) -> None:
        """A handshake message for an association-driven channel (never waits).

        A flight comes as several messages (one per record): collect it and step
        OpenSSL once, when no more has arrived (see _flusher)."""
        self._tls[stream].feed_handshake(data)
        self._taken += 1
        self._unstepped += len(data)
        if not (self._to_step or self._to_flush or self._to_confirm):
            self._flush_wanted.unpark_all()
        self._to_step[stream] = None
        if self._unstepped > STEP_AT:
            self._step_pending()

    def first_data(self, stream: int) -> None:
        """Server: the first byte of ``stream`` arrived; its handshake's clock starts."""
        self._first_data[stream] = trio.current_time()
        if self._watch_deadline == math.inf:
            self._watch.unpark_all()

    def flush_requested(self, pipe: StreamPipe) -> None:
        """Bytes were queued on ``pipe`` outside any send: a flusher sends them."""
        if not self._to_flush:
            self._flush_wanted.unpark_all()
        self._to_flush[pipe] = None

    def wake(self) -> None:
        """Let a client waiting for handshakes notice a change (a failure, a stream the
        peer ended)."""
        self._progress.unpark_all()

    # -- running ---------------------------------------------------------------------------

    def start(self, nursery: trio.Nursery) -> None:
        """Start the flushers, and on the server the watchdog, in ``nursery``."""
        for i in range(FLUSHERS):
            nursery.start_soon(self._flusher, i == 0)
        if self._server_side:
            nursery.start_soon(self._watchdog)

    async def set_up(self) -> None:
        """Client: run the handshake strategy (the server's run in the background).

        Raises:
            AssociationError: a handshake, or the association, failed.
        """
        try:
            if self._server_side:
                await trio.lowlevel.checkpoint()
            else:
                await self._client_handshakes()
        except AssociationError:
            raise
        except trio.BrokenResourceError as exc:
            self._raise_setup_error(0, exc)

    # -- stepping --------------------------------------------------------------------------

    def _step_handshake(self, stream: int, data: bytes | None) -> None:
        """Step one association-driven handshake (see _tls.py); never raises."""
        try:
            done = self._tls[stream].step_handshake(data)
        except ssl.SSLError as exc:
            # Reported by the TLS object already (a failure, or a peer identity that
            # differs), unless OpenSSL called it something ordinary.
            if self._life.error is None:
                error = HandshakeError(f"handshake failed: {exc}", stream=stream)
                error.__cause__ = exc
                self._life.fail(error)
            return
        if not done:
            return
        if stream in self._awaiting:
            self._awaiting.discard(stream)
            if not self._awaiting:
                self._progress.unpark_all()
        elif self._server_side and not self._tls[stream].trio_waited:
            # (A channel whose user waits for the handshake completes it in Trio itself.)
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
        await self._channels[stream].do_handshake()

    async def _drive_handshakes(self, streams: Sequence[int]) -> None:
        """Client: run the handshakes of ``streams`` (all at once), driven by the
        association, and wait for all; any failure is the association's."""
        for stream in streams:
            self._awaiting.add(stream)
            self._tls[stream].drive()
        for stream in streams:
            self._step_handshake(stream, None)  # the ClientHello
            if self._life.error is not None:
                break
        while True:
            self._life.check_usable()
            if not self._awaiting:
                break
            for stream in self._awaiting:
                if self._pipes[stream].peer_finished:
                    # The peer reset the stream or shut the association down mid-way.
                    error = HandshakeError(
                        "the peer ended the stream during the handshake", stream=stream
                    )
                    self._life.fail(error)
                    raise error
            await self._progress.park()
        for stream in streams:
            try:
                # Our last flight (our Finished, in TLS 1.3 and in resumptions) must be
                # on its way before the channel counts as ready, as after do_handshake():
                # queued in the transport already, unless it had no room then.
                pipe = self._pipes[stream]
                if pipe.pending_out:
                    await pipe.flush()
                await self._confirm_handshake(stream)
            except trio.BrokenResourceError as exc:
                self._raise_setup_error(stream, exc)
            except trio.ClosedResourceError:
                # Closed under us because the association failed: report that failure.
                if self._life.error is None:
                    raise
                self._life.check_usable()

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
                await self._settle()
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

    async def _settle(self) -> None:
        """Let the demux take in what has arrived already, so that each channel is
        stepped once for all of it (OpenSSL costs more per step than per byte) and all
        the channels' replies leave together: return once it took nothing in
        :data:`SETTLE_ROUNDS` scheduling rounds in a row. (It runs once per round while
        it has messages, but Trio may order it before or after us in each round, so
        one quiet round alone does not prove that it found nothing.)"""
        seen, quiet = self._taken, 0
        while quiet < SETTLE_ROUNDS:
            await trio.lowlevel.checkpoint()
            if seen == self._taken:
                quiet += 1
            else:
                seen, quiet = self._taken, 0

    async def _watchdog(self) -> None:
        """Server: abort the association if a channel's handshake is not complete
        ``handshake_timeout`` after its first byte (a client that stalls), or if no
        channel received a byte (nor completed a handshake) ``handshake_timeout`` after
        the association started (a peer that never starts TLS: a plain association that
        never speaks holds a slot of the server no longer than a stalled handshake)."""
        timeout = self._options.handshake_timeout
        # From here: the association was just accepted.
        first_deadline = trio.current_time() + timeout
        while True:
            now = trio.current_time()
            deadline = math.inf
            silent = all(first is None for first in self._first_data)
            if silent and not any(tls.handshake_finished is not None for tls in self._tls):
                if first_deadline <= now:
                    self._life.fail(
                        HandshakeError(
                            f"no TLS handshake started within {timeout} s of the "
                            "association's start"
                        )
                    )
                    return
                deadline = first_deadline
            for stream, first in enumerate(self._first_data):
                if first is None or self._tls[stream].handshake_finished is not None:
                    continue
                if first + timeout <= now:
                    self._life.fail(
                        HandshakeError(
                            f"handshake did not complete within {timeout} s", stream=stream
                        )
                    )
                    return
                deadline = min(deadline, first + timeout)
            self._watch_deadline = deadline
            with trio.move_on_at(deadline):
                await self._watch.park()

    def _raise_setup_error(self, stream: int, exc: BaseException) -> NoReturn:
        """Turn a channel's failure during set-up into the association's typed error,
        the most specific account of it, and raise that."""
        if isinstance(exc, AssociationError):
            # The association itself failed (aborted, lost) while shaking hands.
            self._life.fail(exc)
            self._life.check_usable()
        cause = exc.__cause__
        if isinstance(cause, ssl.SSLError) and not isinstance(cause, PeerIdentityMismatch):
            # TLS failed on this stream (e.g. the peer's alert arrived just before its
            # ABORT).
            error: AssociationError = HandshakeError(f"handshake failed: {cause}", stream=stream)
            self._life.fail(error)
            raise error from cause
        if self._life.error is not None:
            self._life.check_usable()
        error = HandshakeError(f"handshake failed: {cause or exc}", stream=stream)
        self._life.fail(error)
        raise error from exc

    # -- client strategies -----------------------------------------------------------------

    async def _client_handshakes(self) -> None:
        cache = self._options.session_cache
        cached = cache.get(self._ssl_context, self._session_key) if cache is not None else None
        channels = self._channels
        strategy = self._options.handshake
        if strategy == "lazy":
            if cached is not None:
                for channel in channels:
                    channel.session = cached
            await trio.lowlevel.checkpoint()
            return
        if strategy == "parallel":
            if cached is not None:
                for channel in channels:
                    channel.session = cached
            await self._drive_handshakes(range(len(channels)))
            self._remember_session(0)
            return
        # "resume": full (or cached) handshake on stream 0, then the rest resume it.
        if cached is not None:
            channels[0].session = cached
        await self._drive_handshakes([0])
        session = await self._resumable_session()
        for stream in range(1, len(channels)):
            if session is not None:
                channels[stream].session = session
            else:
                self.notes[stream] = "full handshake: no resumable session from stream 0"
        await self._drive_handshakes(range(1, len(channels)))

    def _remember_session(self, stream: int, session: ssl.SSLSession | None = None) -> None:
        cache = self._options.session_cache
        if cache is None or not self._channels:
            return
        tls = self._tls[stream]
        if session is None:
            # Each read of .session copies it (serialises and parses it, certificate
            # included): read it once.
            session = tls.session
        if is_resumable(session, tls.version()):
            assert session is not None
            cache.put(self._ssl_context, self._session_key, session)

    async def _resumable_session(self) -> ssl.SSLSession | None:
        if len(self._channels) == 1:
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
        channel, tls, pipe = self._channels[0], self._tls[0], self._pipes[0]
        timeout = self._options.ticket_timeout
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
                while tls.pushed_back < self._options.stream_budget:
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
