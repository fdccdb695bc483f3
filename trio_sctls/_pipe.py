"""StreamPipe: one SCTP stream id, both directions, as a :class:`trio.abc.Stream`.

It is the ``transport_stream`` under one :class:`trio.SSLStream`.

Receive side: the association's demux task appends each message that arrives on this
stream (one TLS record each) with :meth:`StreamPipe.feed`, which never blocks; a reader
takes everything buffered at once. The buffer's size is what the association's budget
policy watches.

Send side: TLS hands us bytes that hold whole records (OpenSSL writes whole records into
its memory BIO); RFC 3436 section 3.2 wants each TLS record carried as one SCTP user
message, ordered, with no lifetime limit (section 6.2), so we cut at the 5-byte record
headers and send record by record. A partial record (never produced by OpenSSL, but
allowed by the Stream contract) waits for the rest.

Records without waiting. Where the transport has a private ``_send_nowait`` (udp,
memory), records go to it at once, without a checkpoint: the handshake flights and
session tickets that the association produces itself (:meth:`StreamPipe.queue_out`, see
:mod:`trio_sctls._tls`), and every :meth:`StreamPipe.send_all`, which then checkpoints
once for the lot instead of once per record. So when OpenSSL has stepped many channels
in one scheduling round (the association's stepper, or the channels' own tasks woken by
one receive burst), all their flights are queued before the transport's pump next
flushes, and leave bundled into as few packets as the path MTU allows, instead of one
flush (a packet, or a few) per round of a sending task. Where the transport cannot take
a message without waiting (no room; or no such hook: kernel SCTP), the send waits
through ``send_message``, and :meth:`StreamPipe.queue_out` keeps the bytes in
:attr:`StreamPipe.pending_out` for the owner's flushers.

Closing a pipe closes this one stream locally: unread bytes are dropped, later arrivals
are discarded, and we ask SCTP to reset our outgoing stream (RFC 6525) so that the peer's
pipe learns of it, the way a TCP peer learns of a close. When the peer resets its
outgoing stream, our receive side ends (b"" after what is buffered) and our sends fail
with :class:`trio.BrokenResourceError`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Protocol, final

import trio

from .transport import MessageTransport

#: TLS record header: content type (1), legacy version (2), length (2).
TLS_HEADER_SIZE = 5

#: What a channel's TLS object has Trio send while the association drives its handshake
#: (see :mod:`trio_sctls._tls`): :meth:`StreamPipe.send_all` sends nothing then, but
#: waits until the handshake is complete. (No TLS record starts with a zero byte.)
HANDSHAKE_WAIT = b"\x00handshake under way"

#: A transport's ``_send_nowait(data, stream, ppid)``: queue one message without waiting
#: (:class:`trio.WouldBlock` when it would have to wait).
QueueNowait = Callable[[memoryview, int, int], None]


class PipeOwner(Protocol):
    """What a pipe needs from its owner, the association's demultiplexer
    (:class:`~trio_sctls._demux.Demux`); kept small so that pipes test alone."""

    transport: MessageTransport

    def check_usable(self) -> None:
        """Raise the association's error if it is broken or closed."""

    def note_consumed(self, nbytes: int) -> None:
        """Account ``nbytes`` taken out of a pipe's buffer (the budget)."""

    def pipe_closed(self, pipe: StreamPipe) -> None:
        """A pipe was closed locally."""

    def flush_requested(self, pipe: StreamPipe) -> None:
        """Bytes were queued on ``pipe`` outside any send: have them sent soon
        (:meth:`StreamPipe.flush`)."""


@final
class StreamPipe(trio.abc.Stream):
    """The byte stream of one SCTP stream id, framed as TLS records on the way out.

    Args:
        owner: the association that feeds and accounts for this pipe.
        stream_id: the SCTP stream id.
        ppid: the payload protocol identifier put on every message sent.
    """

    def __init__(self, owner: PipeOwner, stream_id: int, *, ppid: int = 0) -> None:
        self._owner = owner
        self.stream_id = stream_id
        self.ppid = ppid
        self._chunks: deque[bytes] = deque()
        #: Bytes buffered and not yet read.
        self.buffered = 0
        #: Set when the peer reset its outgoing stream or the association ended
        #: gracefully: the receive side ends once the buffer is empty.
        self.peer_finished = False
        self.closed = False
        self._arrived = trio.lowlevel.ParkingLot()
        # Send side: whether a send is under way (senders that find one wait in
        # _send_turn, first come first served).
        self._sending = False
        self._send_turn = trio.lowlevel.ParkingLot()
        self._partial = b""
        self._receiving = False
        #: Called each time a reader wants more bytes; the association's ticket
        #: harvest uses it to stop reading the moment a session ticket was processed.
        self.on_receive_wait: Callable[[], None] | None = None
        #: Bytes to send before anything else: handshake flights the association
        #: produced, TLS 1.3 session tickets (see _tls.py), that the transport could
        #: not take at once. :meth:`queue_out` adds.
        self.pending_out = b""
        # The transport's way to queue a message without waiting or a checkpoint, where
        # it has one (see the module docstring).
        self._queue_nowait: QueueNowait | None = getattr(owner.transport, "_send_nowait", None)
        #: Set while Trio waits for the handshake that the association drives (see
        #: :data:`HANDSHAKE_WAIT`); cleared by :meth:`handshake_done`.
        self.handshake_running = False

    # -- fed by the demux task -------------------------------------------------------

    def feed(self, data: bytes) -> bool:
        """Buffer ``data`` that arrived on this stream. Never blocks.

        Returns:
            ``False`` if the pipe is closed and the bytes were discarded.
        """
        if self.closed:
            return False
        self._chunks.append(data)
        self.buffered += len(data)
        self._arrived.unpark_all()
        return True

    def finish(self) -> None:
        """Nothing more will arrive: readers get b"" once the buffer is empty."""
        self.peer_finished = True
        self._arrived.unpark_all()

    def wake(self) -> None:
        """Wake readers so that they notice the association's state changed."""
        self._arrived.unpark_all()

    def handshake_done(self) -> None:
        """The handshake that the association drove is complete: a Trio step waiting
        for it (see :data:`HANDSHAKE_WAIT`) goes on."""
        if self.handshake_running:
            self.handshake_running = False
            self._arrived.unpark_all()

    # -- receive side ------------------------------------------------------------------

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        """Return what is buffered (at most ``max_bytes``), waiting if nothing is.

        Returns b"" once the peer finished this stream and everything was read.
        """
        if max_bytes is not None and max_bytes < 1:
            raise ValueError("max_bytes must be >= 1")
        if self._receiving:
            raise trio.BusyResourceError("another task is receiving on this stream")
        self._receiving = True
        try:
            await trio.lowlevel.checkpoint_if_cancelled()
            # Trio wants one schedule point per call: parking is one, so a call that
            # waited returns at once (another yield here costs a scheduler pass per
            # record, which shows in request/response latency).
            parked = False
            while True:
                if self.closed:
                    raise trio.ClosedResourceError("this stream was closed")
                if self._chunks:
                    data = self._take(max_bytes)
                    if not parked:
                        await trio.lowlevel.cancel_shielded_checkpoint()
                    return data
                self._owner.check_usable()
                if self.peer_finished:
                    if not parked:
                        await trio.lowlevel.cancel_shielded_checkpoint()
                    return b""
                if self.on_receive_wait is not None:
                    self.on_receive_wait()
                await self._arrived.park()
                parked = True
        finally:
            self._receiving = False

    def _take(self, max_bytes: int | None) -> bytes:
        chunks = self._chunks
        if max_bytes is None or max_bytes >= self.buffered:
            data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
            chunks.clear()
        else:
            parts: list[bytes] = []
            wanted = max_bytes
            while wanted:
                head = chunks[0]
                if len(head) <= wanted:
                    parts.append(chunks.popleft())
                    wanted -= len(head)
                else:
                    parts.append(head[:wanted])
                    chunks[0] = head[wanted:]
                    wanted = 0
            data = b"".join(parts)
        self.buffered -= len(data)
        self._owner.note_consumed(len(data))
        return data

    # -- send side -----------------------------------------------------------------------

    def _check_sendable(self) -> None:
        if self.closed:
            raise trio.ClosedResourceError("this stream was closed")
        self._owner.check_usable()
        if self.peer_finished:
            raise trio.BrokenResourceError(f"the peer closed stream {self.stream_id}")

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        """Send TLS bytes, one SCTP user message per TLS record."""
        if len(data) == len(HANDSHAKE_WAIT) and data == HANDSHAKE_WAIT:
            # (Whether or not the handshake is still running: it may have completed
            # while Trio queued for its send lock.)
            await self._wait_for_handshake()
            return
        await trio.lowlevel.checkpoint_if_cancelled()
        # Behind whoever is sending, or after bytes pending or partial: then ``data``
        # goes out appended to those. Otherwise (nearly every record: SSLStream
        # serialises its own writes, and a flight queued outside a send is rare) nothing
        # is prepended and nobody waited for, so the records go out of ``data`` itself,
        # without copying it.
        queued = self._sending or self.pending_out or self._partial
        if self._sending:
            # Wait for our turn (FIFO): the sender that releases hands the pipe over.
            await self._send_turn.park()
        self._sending = True
        try:
            self._check_sendable()
            size = len(data)
            if queued:
                buffer = self.pending_out + self._partial + bytes(data)
                self.pending_out = self._partial = b""
                await self._send_records(memoryview(buffer))
            elif (
                self._queue_nowait is None
                and size > TLS_HEADER_SIZE
                and TLS_HEADER_SIZE + int.from_bytes(data[3:5]) == size
            ):
                # Exactly one record: what SSLStream hands over for writes up to 16 KiB.
                await self._owner.transport.send_message(
                    data, stream=self.stream_id, ppid=self.ppid
                )
            else:
                await self._send_records(memoryview(data))
        except trio.ClosedResourceError:
            # The transport was closed under the send: if the association failed (it
            # closes the transport when it does), raise its error, which is what the
            # channel's user must see, rather than the transport's own "closed".
            self._owner.check_usable()
            raise
        finally:
            self._release_send()

    async def _wait_for_handshake(self) -> None:
        """Hold Trio's handshake step until the association completed the handshake
        (see :data:`HANDSHAKE_WAIT`); raise if the association or this stream ends."""
        await trio.lowlevel.checkpoint_if_cancelled()
        while self.handshake_running:
            self._check_sendable()
            await self._arrived.park()
        await trio.lowlevel.cancel_shielded_checkpoint()

    async def _send_records(self, view: memoryview) -> None:
        """Send each whole record in ``view`` as one message (handed to the transport
        without waiting while it takes them so, so that a flight is queued whole before
        the transport's next flush); keep a partial record's bytes in :attr:`_partial`
        for the next send. A checkpoint either way."""
        view = self._queue_records(view)
        send = self._owner.transport.send_message
        sent = False
        while len(view) >= TLS_HEADER_SIZE:
            end = TLS_HEADER_SIZE + int.from_bytes(view[3:5])
            if end > len(view):
                break
            await send(view[:end], stream=self.stream_id, ppid=self.ppid)
            sent = True
            view = view[end:]
        if len(view):
            self._partial = bytes(view)
        if not sent:
            await trio.lowlevel.cancel_shielded_checkpoint()

    def _release_send(self) -> None:
        """Hand the send side to the next waiting sender, if any."""
        if self._send_turn:
            self._send_turn.unpark()
        else:
            self._sending = False

    def queue_out(self, data: bytes) -> None:
        """Send TLS bytes ahead of any later :meth:`send_all`, without waiting: handed
        to the transport at once where it can queue them so (see the module docstring),
        else kept in :attr:`pending_out` for the owner to have sent. Never blocks."""
        if not data:
            return
        if not (self._sending or self.pending_out or self._partial or self.peer_finished):
            try:
                self._check_sendable()
                rest = self._queue_records(memoryview(data))
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                # The association is over: the owner's flush meets the error and
                # reports it as usual.
                pass
            else:
                if not rest:
                    return
                data = bytes(rest)
        self.pending_out += data
        self._owner.flush_requested(self)

    def _queue_records(self, view: memoryview) -> memoryview:
        """Hand the whole records at the start of ``view`` to the transport without
        waiting, while it takes them so; return the rest.

        Raises:
            what the transport's send raises (not :class:`trio.WouldBlock`).
        """
        queue = self._queue_nowait
        if queue is None:
            return view
        try:
            while len(view) >= TLS_HEADER_SIZE:
                end = TLS_HEADER_SIZE + int.from_bytes(view[3:5])
                if end > len(view):
                    break
                queue(view[:end], self.stream_id, self.ppid)
                view = view[end:]
        except trio.WouldBlock:
            pass
        return view

    async def flush(self) -> None:
        """Send :attr:`pending_out` now, if any."""
        if self.pending_out:
            await self.send_all(b"")
        else:
            await trio.lowlevel.checkpoint()

    async def wait_send_all_might_not_block(self) -> None:
        """Checkpoint; SCTP's send buffer is shared, so we cannot say more."""
        await trio.lowlevel.checkpoint()
        self._check_sendable()

    async def aclose(self) -> None:
        """Close this stream locally; the association and other streams carry on."""
        if not self.closed:
            self.closed = True
            self._owner.note_consumed(self.buffered)
            self._chunks.clear()
            self.buffered = 0
            self._arrived.unpark_all()
            self._owner.pipe_closed(self)
        await trio.lowlevel.checkpoint()
