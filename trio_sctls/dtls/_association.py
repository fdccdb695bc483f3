"""A DTLS-over-SCTP association (RFC 6083): the message API over a :class:`DTLSEngine`.

Theory of operation
===================

Unlike the RFC 3436 association, there is one security context for the whole
association and no per-stream byte streams, so no background task is needed: the task
that calls :meth:`DTLSAssociation.receive` reads the transport, feeds each message to
the engine and returns the next plaintext message; handshake messages that arrive on
the way (the first handshake, a renegotiation) are answered from there too. A sender
encrypts one message into one record and sends it.

Every record OpenSSL writes must reach SCTP in the order it was written (sequence
numbers, and the SCTP-AUTH key switch tied to the Finished record), whichever task
caused it to be written. So records go through one queue, sent by whichever task holds
the send lock, strictly first in, first out. A record stays at the head of the queue
until the transport has taken it: a cancelled send leaves it there for the next
flush, so a cancelled :meth:`~DTLSAssociation.send_message` may still deliver its
message (a DTLS record, once sealed, cannot be withdrawn without breaking the
sequence).

Failure. Any error the peer causes (see :mod:`._engine`) or the transport reports
ends the association: the error is recorded, the transport aborted with the reason,
and every later call raises it again, as :class:`~trio_sctls.AssociationError`
subclasses (so :class:`trio.BrokenResourceError`) that the serving loop contains.
"""

from __future__ import annotations

import functools
import math
from collections import deque
from collections.abc import Callable
from typing import final

import trio
from OpenSSL import SSL

from .._errors import AssociationError, HandshakeError, PeerShutdownError, RemoteProtocolError
from .._util import OverTransport
from ..transport import Message, MessageTransport, ShutdownReceived, TransportState
from ..transport._base import check_send_args
from ._engine import DTLSEngine, OutgoingRecord
from ._options import DTLSOptions
from ._records import MAX_PLAINTEXT


@final
class DTLSAssociation(OverTransport):
    """One SCTP association secured by DTLS 1.2 (RFC 6083), seen as messages on
    streams, in the shape of :class:`~trio_sctls.MessageTransport`: send a message on
    a stream with a PPID, receive messages with their stream and PPID. Messages are at
    most 2**14 bytes (one DTLS record each). Built by
    :func:`~trio_sctls.dtls.open_dtls_association` and
    :func:`~trio_sctls.dtls.serve_dtls`.

    The handshake runs on first use (or :meth:`do_handshake`), within
    ``options.handshake_timeout``.

    Attributes:
        transport: the SCTP association underneath (it negotiated SCTP-AUTH).
        options: see :class:`DTLSOptions`.
    """

    def __init__(
        self,
        transport: MessageTransport,
        ssl_context: SSL.Context,
        *,
        server_side: bool,
        server_hostname: str | None = None,
        options: DTLSOptions | None = None,
    ) -> None:
        keys = transport.auth
        if keys is None:
            raise RemoteProtocolError(
                "the association did not negotiate SCTP-AUTH (RFC 4895), which DTLS over "
                "SCTP requires (RFC 6083 section 4.5): the peer or this transport lacks it"
            )
        super().__init__(transport)
        self.options = options if options is not None else DTLSOptions()
        self.server_side = server_side
        self._engine = DTLSEngine(
            ssl_context,
            keys,
            server_side=server_side,
            server_hostname=server_hostname,
            handshake_ppid=self.options.handshake_ppid,
            label_bug=self.options.label_bug,
        )
        self._pending: deque[OutgoingRecord] = deque()
        self._inbox: deque[Message] = deque()
        self._send_lock = trio.StrictFIFOLock()
        self._handshake_lock = trio.Lock()
        self._started = False
        self._handshake_deadline = math.inf
        self._round_done = trio.Event()
        self._rounds_seen = 0
        self._error: AssociationError | None = None
        self._closed = False

    def __repr__(self) -> str:
        side = "server" if self.server_side else "client"
        return f"<DTLSAssociation {side} over {self.transport!r}>"

    # -- what it is -----------------------------------------------------------------------

    @property
    def error(self) -> AssociationError | None:
        """Why the association ended, if it failed."""
        return self._error

    @property
    def handshakes(self) -> int:
        """DTLS handshakes completed: 1 after the first, +1 per renegotiation."""
        return self._engine.handshakes

    @property
    def active_key_id(self) -> int:
        """The SCTP-AUTH Shared Key Identifier our messages are signed with (RFC 6083
        section 4.7: 0 before the first handshake, then 1, 2, ...)."""
        return self._engine.active_key_id

    @property
    def peer_certificate(self) -> bytes | None:
        """The peer's certificate (DER) from the first handshake, pinned for later
        ones; ``None`` if it sent none (a client without one)."""
        return self._engine.peer_certificate

    @property
    def cipher(self) -> str | None:
        """The negotiated cipher suite."""
        return self._engine.cipher

    @property
    def version(self) -> str:
        """The negotiated protocol version (always "DTLSv1.2")."""
        return self._engine.version

    # -- handshakes -------------------------------------------------------------------------

    async def do_handshake(self) -> None:
        """Run the first DTLS handshake if it has not completed; idempotent.

        Raises:
            HandshakeError: it failed or did not complete within
                ``options.handshake_timeout`` (the association is aborted).
            RemoteProtocolError: the peer broke RFC 6083.
            trio.BrokenResourceError: the association failed.
        """
        if self._engine.handshake_complete:
            await trio.lowlevel.checkpoint()
            self._check()
            return
        async with self._handshake_lock:
            if not self._started:
                self._started = True
                self._handshake_deadline = trio.current_time() + self.options.handshake_timeout
                self._guard(self._engine.start)
            await self._run_until(lambda: self._engine.handshake_complete, "handshake")

    async def renegotiate(self) -> None:
        """Run a new handshake on the established connection and wait for it: new
        DTLS keys, a new SCTP-AUTH key (RFC 6083 section 4.7), and the peer's
        certificate checked again against the pinned one.

        OpenSSL lets the server start one; a client's request is refused by OpenSSL
        servers unless their context allows client renegotiation. The peer must be
        receiving. Messages that arrive meanwhile are kept for :meth:`receive`; do not
        call this while another task is in :meth:`receive`. Send nothing during it on
        streams other than 0 if the peer may still be sending on them: records of the
        old epoch that arrive after the switch cannot be decrypted.

        Raises:
            PeerIdentityError: the peer presented another certificate.
            HandshakeError: the handshake failed or timed out.
        """
        await self.do_handshake()
        target = self._engine.handshakes + 1
        self._guard(self._engine.renegotiate)
        self._handshake_deadline = trio.current_time() + self.options.handshake_timeout
        await self._run_until(lambda: self._engine.handshakes >= target, "renegotiation")

    async def _run_until(self, done: Callable[[], bool], what: str) -> None:
        try:
            with trio.fail_at(self._handshake_deadline):
                await self._flush()
                while not done():
                    await self._receive_one()
        except trio.TooSlowError:
            raise self._fail(
                HandshakeError(f"no DTLS {what} within {self.options.handshake_timeout} s")
            ) from None
        except trio.EndOfChannel:
            raise self._fail(HandshakeError(f"the peer closed during the DTLS {what}")) from None

    # -- messages ---------------------------------------------------------------------------

    async def send_message(
        self,
        data: bytes | bytearray | memoryview,
        *,
        stream: int,
        ppid: int = 0,
        unordered: bool = False,
    ) -> None:
        """Send one message (at most 2**14 bytes) as one DTLS record, as one SCTP user
        message on ``stream`` with ``ppid``, unordered if asked (RFC 6083 section 4.4).

        Raises:
            ValueError: empty or over 2**14 bytes, a stream out of range, a PPID over
                32 bits; nothing is sent.
            trio.ClosedResourceError: we closed the association.
            trio.BrokenResourceError: it failed (an :class:`~trio_sctls.AssociationError`
                says why).
        """
        if not 0 < len(data) <= MAX_PLAINTEXT:
            raise ValueError(
                f"DTLS over SCTP carries messages of 1..{MAX_PLAINTEXT} bytes (one record, "
                f"RFC 6083 section 4.2), not {len(data)}"
            )
        check_send_args(self.transport, data, stream, ppid)
        await self.do_handshake()
        payload = bytes(data)
        while not self._guard(lambda: self._engine.encrypt(payload, stream, ppid, unordered)):
            # OpenSSL is in the middle of a renegotiation: the task receiving drives it.
            await self._flush()
            await self._round_done.wait()
            self._check()
        await self._flush()

    async def receive(self) -> Message:
        """The next message, with the stream, PPID and ordering it was sent with.

        Raises:
            trio.EndOfChannel: the peer closed (close_notify, or SCTP's SHUTDOWN).
            trio.ClosedResourceError: we closed the association.
            trio.BrokenResourceError: it failed (an :class:`~trio_sctls.AssociationError`
                says why: a record that failed authentication, a handshake record off
                stream 0, an oversized message, an alert...).
            trio.BusyResourceError: another task is receiving.
        """
        await self.do_handshake()
        while not self._inbox:
            if self._engine.peer_closed:
                await trio.lowlevel.checkpoint()
                raise trio.EndOfChannel
            await self._receive_one()
        await trio.lowlevel.checkpoint()
        return self._inbox.popleft()

    def __aiter__(self) -> DTLSAssociation:
        return self

    async def __anext__(self) -> Message:
        try:
            return await self.receive()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None

    # -- closing -----------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Send close_notify once the peer has acknowledged everything sent before, then
        shut SCTP down gracefully (all within ``options.close_timeout``, else abort).
        Idempotent.

        .. warning:: If cancelled, the association is aborted instead.
        """
        if self._closed:
            await trio.lowlevel.checkpoint()
            return
        self._closed = True
        try:
            if (
                self._error is None
                and self._engine.handshake_complete
                and self.transport.state is TransportState.OPEN
            ):
                with trio.move_on_after(self.options.close_timeout) as scope:
                    # RFC 6083 (Shutdown): close_notify only once the peer acknowledged
                    # everything before it, which it then reads first, whatever the
                    # streams; sent at once, it could overtake data on other streams.
                    await self._flush(closing=True)
                    if self.transport.state is TransportState.OPEN:
                        await self.transport.wait_sender_dry()
                        self._engine.close()
                        await self._flush(closing=True)
                    await self.transport.aclose()
                if scope.cancelled_caught:
                    self.transport.abort("close timed out")
            else:
                await self.transport.aclose()
        except BaseException:
            self.transport.abort()
            raise

    def abort(self, reason: str = "") -> None:
        """Abort the association at once (SCTP ABORT, with ``reason`` where the
        transport can carry it). Idempotent."""
        self._closed = True
        self.transport.abort(reason)

    # -- internals ---------------------------------------------------------------------------

    def _check(self) -> None:
        if self._error is not None:
            raise type(self._error)(self._error.detail, stream=self._error.stream)
        if self._closed:
            raise trio.ClosedResourceError("this DTLS association was closed")

    def _fail(self, error: AssociationError) -> AssociationError:
        """Record ``error`` (the first one wins), abort the transport; return it."""
        if self._error is None:
            self._error = error
            self.transport.abort(str(error)[:200])
        self._round_done.set()
        return error

    def _guard(self, step: Callable[[], object]) -> bool:
        """Run a synchronous engine step; a failure ends the association."""
        self._check()
        try:
            result = step()
        except AssociationError as exc:
            raise self._fail(exc) from exc.__cause__
        self._note_rounds()
        return bool(result)

    def _note_rounds(self) -> None:
        if self._engine.handshakes != self._rounds_seen:
            self._rounds_seen = self._engine.handshakes
            self._round_done.set()
            self._round_done = trio.Event()
        self._inbox.extend(self._engine.plaintext())

    async def _receive_one(self) -> None:
        """Read one item from the transport and let the engine process it."""
        self._check()
        try:
            item = await self.transport.receive()
        except AssociationError as exc:
            raise self._fail(exc) from None
        if isinstance(item, Message):
            message = item
            self._guard(
                lambda: self._engine.receive(
                    message.data, message.stream, message.ppid, message.unordered
                )
            )
            await self._flush(wait=False)
        elif isinstance(item, ShutdownReceived):
            # The peer shut SCTP down: what it sent was delivered before this.
            self._engine.peer_closed = True

    async def _flush(self, *, closing: bool = False, wait: bool = True) -> None:
        """Send the queued records, in order (see the module docstring).

        With ``wait=False`` (the receiving task), records are left to a task already
        sending, which sends everything queued before it lets go: a receiver must not
        wait behind a sender whose peer waits for us to read (the peer's window is
        full of what it is echoing back)."""
        self._pending.extend(self._engine.outgoing())
        if not wait and (not self._pending or self._send_lock.locked()):
            await trio.lowlevel.checkpoint()
            return
        async with self._send_lock:
            self._pending.extend(self._engine.outgoing())
            while self._pending:
                if not closing:
                    self._check()
                record = self._pending[0]
                self._engine.sending(record)
                try:
                    await self.transport.send_message(
                        record.data,
                        stream=record.stream,
                        ppid=record.ppid,
                        unordered=record.unordered,
                    )
                except PeerShutdownError as exc:
                    if not closing:
                        raise self._fail(exc) from None
                    # The peer shut SCTP down while we close: nothing more can reach it.
                    self._pending.clear()
                    return
                except AssociationError as exc:
                    raise self._fail(exc) from None
                self._pending.popleft()
                if not closing:
                    self._guard(functools.partial(self._engine.sent, record))
                self._pending.extend(self._engine.outgoing())
