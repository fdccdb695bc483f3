"""Linux kernel SCTP as a :class:`~trio_sctls.transport.MessageTransport`.

Theory of operation
-------------------

One association is one *one-to-one style* kernel socket (``socket(AF_INET[6],
SOCK_STREAM, IPPROTO_SCTP)``, RFC 6458 section 4), put in non-blocking mode. Every
system call is tried first; when it says ``EAGAIN`` the task waits through Trio
(:func:`trio.lowlevel.wait_readable` / :func:`~trio.lowlevel.wait_writable`) and tries
again. No threads, and no call that can block the event loop.

**Binding.** Everything goes through the standard library: ``socket.sendmsg`` with an
``SCTP_SNDINFO`` control message (stream, flags, PPID) and ``socket.recvmsg_into`` with
``SCTP_RCVINFO`` control messages (enabled by ``SCTP_RECVRCVINFO``), plus a handful of
``setsockopt`` calls. pysctp was measured against it and is not faster
(``docs/transports.md``); the standard library needs no extra (LGPL, C) dependency,
speaks the current RFC 6458 API (SNDINFO/RCVINFO) where pysctp reads the deprecated
``SCTP_SNDRCV``, and ``recvmsg_into`` reads into one preallocated buffer. Nagle is
turned off (``SCTP_NODELAY``), as Trio does for TCP: it made small messages twice as
slow.

**Byte order.** The PPID travels on the wire exactly as the socket API holds it, so it
is converted with ``htonl``/``ntohl`` here (verified with a packet capture in the VM:
``ppid=46`` arrives as 46, and pysctp peers agree). Cause codes the kernel copies out of
ABORT and ERROR chunks (``sac_error``, ``ssf_error``, ``sre_error``) are in network
byte order too.

**Messages.** A send is one ``sendmsg`` call: SCTP sends a message whole or not at all,
so a message is never half-queued, even when a sender is cancelled. Concurrent senders
are allowed (the layer above writes many streams from many tasks). The fast path sends
at once; when the send buffer is full, senders queue on a FIFO lock, and the one at its
head waits for the socket to become writable (Trio allows one waiter per direction per
socket), so they go out in the order they asked. A receive returns one whole message:
a message larger than one read (or split by the kernel's partial delivery) comes in
pieces without ``MSG_EOR`` and is reassembled (with Linux's default
``SCTP_FRAGMENT_INTERLEAVE`` level 0, the pieces of one message are never interleaved
with other messages). Pieces are counted against ``max_message_size`` as they arrive,
and a message that exceeds it aborts the association with
:class:`~trio_sctls.RemoteProtocolError`, so a peer cannot make us buffer without bound.
Reassembly state lives on the transport, so a receive cancelled between pieces loses
nothing. Fragmentation is never disabled (RFC 3436 section 3.2). Linux refuses
(``EMSGSIZE``, raised as :class:`ValueError`) to send a message larger than the socket's
send buffer (425,984 bytes with default sysctls, see below), far above the largest TLS
record. A sender whose peer does not read waits: SCTP's receive window pushes back, as a
full TCP window does.

**Notifications** (subscribed with ``SCTP_EVENT`` on the socket before connecting, or on
the listener before ``listen``, which accepted sockets inherit): association change,
shutdown, send failed (``SCTP_SEND_FAILED_EVENT``, else the older ``SCTP_SEND_FAILED``),
peer address change and remote error. They become the :class:`Event` dataclasses, in
the order the kernel queued them among the messages. ``COMM_UP`` is consumed quietly:
the negotiated stream counts are read with ``SCTP_STATUS`` before connect/accept return.
The end of the association:

* peer SHUTDOWN: :class:`ShutdownReceived`, then the messages still queued, then
  ``SHUTDOWN_COMP`` (or end of file) becomes :class:`trio.EndOfChannel`;
* ``COMM_LOST``: the kernel queues one ``SEND_FAILED`` notification per undelivered
  message *behind* it, so those are read at once and returned as :class:`SendFailed`
  events, and then :class:`~trio_sctls.AssociationAbortedError` (``SO_ERROR`` is
  ``ECONNRESET``: the peer sent ABORT) or :class:`~trio_sctls.AssociationLostError`
  (retransmission limit) is raised, and again on every later call. After ``COMM_LOST``
  or an own-initiated ``SHUTDOWN_COMP`` a one-to-one socket never becomes readable
  again, which is why association-change notifications are always subscribed.

**Stream reset** (RFC 6525): every socket offers stream reconfiguration
(``SCTP_RECONFIG_SUPPORTED``; Linux's default ``net.sctp.reconf_enable`` is off) and
accepts the peer's outgoing-stream resets (``SCTP_ENABLE_STREAM_RESET``), which arrive
as :class:`StreamReset` after the stream's last message. :meth:`KernelTransport.\
reset_outgoing_stream` sends ``SCTP_RESET_STREAMS``; it returns ``False`` when the peer
did not offer the extension.

**Closing.** :meth:`KernelTransport.aclose` is SCTP's graceful close: ``shutdown(SHUT_WR)``
sends SHUTDOWN once the peer has acknowledged everything we queued; then the socket is
read (and discarded) until ``SHUTDOWN_COMP`` or end of file, because Linux turns
``close()`` into an ABORT while unread data is queued. That wait is bounded by
:attr:`KernelTransport.close_timeout`; on timeout or cancellation the association is
aborted instead. :meth:`KernelTransport.abort` sets ``SO_LINGER`` to ``{1, 0}`` and
closes, which sends ABORT at once. Either way, tasks blocked in the transport are woken
with :class:`trio.ClosedResourceError` (:func:`trio.lowlevel.notify_closing`), and later
calls raise it too.

The socket API itself (constants, struct layouts, socket options, address packing and
notification parsing) lives in :mod:`trio_sctls.transport._linux`.
"""

from __future__ import annotations

import contextlib
import enum
import errno
import os
import socket
import struct
from collections import deque
from typing import NoReturn, final

import trio

from ..._errors import (
    AssociationAbortedError,
    AssociationError,
    AssociationLostError,
    RemoteProtocolError,
)
from .._auth import AuthKeys
from .._base import (
    AssociationChange,
    AssociationState,
    Message,
    MessageTransport,
    Received,
    SendFailed,
    ShutdownReceived,
    StreamReset,
    TransportState,
)
from .._linux import (
    _ANCILLARY_SIZE,
    _ASSOC_CHANGE,
    _ASSOC_CHANGE_INFO,
    _MSG_EOR,
    _MSG_NOTIFICATION,
    _NOTIFICATION_HEADER,
    _RESET_STREAMS,
    _SCTP_ASSOC_CHANGE,
    _SCTP_GET_LOCAL_ADDRS,
    _SCTP_GET_PEER_ADDRS,
    _SCTP_RESET_STREAMS,
    _SCTP_SHUTDOWN_EVENT,
    _SCTP_SNDINFO,
    _SCTP_STREAM_RESET_DENIED,
    _SCTP_STREAM_RESET_EVENT,
    _SCTP_STREAM_RESET_FAILED,
    _SCTP_STREAM_RESET_INCOMING_SSN,
    _SCTP_STREAM_RESET_OUTGOING,
    _SCTP_UNORDERED,
    _SNDINFO,
    _STREAM_RESET_EVENT_LIST,
    _USER_INITIATED_ABORT,
    GRACEFUL_CLOSE_TIMEOUT,
    IPPROTO_SCTP,
    RECEIVE_BUFFER_SIZE,
    RESET_RETRY_MAX,
    RESET_RETRY_MIN,
    _association_addresses,
    _cause_text,
    _parse_event,
    _parse_rcvinfo,
    sctp_status,
)

#: Most distinct (stream, ppid, unordered) control messages kept per transport.
_ANCILLARY_CACHE_SIZE = 1024


# --- The transport -----------------------------------------------------------------------


class _Ending(enum.Enum):
    """Why :meth:`KernelTransport.receive` will not return any more messages."""

    END_OF_FILE = "end of file"
    ERROR = "error"


@final
class KernelTransport(MessageTransport):
    """One SCTP association over a Linux one-to-one kernel socket.

    Create it with :func:`connect_kernel` or :meth:`KernelListener.accept`; both return
    it established, with the negotiated stream counts known. See the module docstring
    for how it works.

    Attributes:
        close_timeout: seconds :meth:`aclose` waits for the graceful SHUTDOWN to
            complete before it aborts instead (default :data:`GRACEFUL_CLOSE_TIMEOUT`).
    """

    kind = "kernel"

    #: The SCTP-AUTH keys, set by the opener when the association requires SCTP-AUTH.
    _auth_keys: AuthKeys | None = None

    @property
    def auth(self) -> AuthKeys | None:
        """The SCTP-AUTH keys (``SCTP_AUTH_*`` socket options) with ``auth=True``."""
        return self._auth_keys

    def __init__(self, sock: socket.socket, *, max_message_size: int) -> None:
        """Wrap an established, configured, non-blocking socket (internal: use
        :func:`connect_kernel` or :meth:`KernelListener.accept`)."""
        self._sock = sock
        self._max_message_size = max_message_size
        self.close_timeout: float = GRACEFUL_CLOSE_TIMEOUT
        self._assoc_id = 0
        self._read_status()
        # Receive state: one buffer, the message or notification being reassembled, and
        # what has been read ahead of the caller.
        self._buffer = bytearray(min(RECEIVE_BUFFER_SIZE, max_message_size + 1))
        self._buffers = [self._buffer]
        self._view = memoryview(self._buffer)
        self._partial: bytearray | None = None
        self._partial_info: tuple[int, int, bool] = (0, 0, False)
        self._partial_notification: bytearray | None = None
        self._ready: deque[Received] = deque()
        # Whether the next receive() yields before its first recvmsg, and whether it
        # waits for the socket before it (receive_nowait found it empty): see there.
        self._yield_first = False
        self._known_empty = False
        self._ending: _Ending | None = None
        # A send saw ECONNRESET: that consumed the socket's pending error, so COMM_LOST
        # handling must not take SO_ERROR == 0 to mean "lost" rather than "aborted".
        self._peer_reset = False
        # Send state: senders that found the buffer full queue here.
        self._send_lock = trio.StrictFIFOLock()
        # The SCTP_SNDINFO control message of each (stream, ppid, unordered) sent on, once
        # validated: sends are on every TLS record's path, and these rarely vary. Cleared
        # when the stream counts change (RESTART).
        self._ancillary: dict[tuple[int, int, bool], list[tuple[int, int, bytes]]] = {}
        # Closing: _released once the fd is gone.
        self._released = False

    def __repr__(self) -> str:
        return (
            f"<KernelTransport fd={self._sock.fileno()} {self._state.value} "
            f"out={self._outbound_streams} in={self._inbound_streams}>"
        )

    # -- Properties ----------------------------------------------------------------------

    @property
    def local_addresses(self) -> list[tuple[str, int]]:
        """Our addresses in this association, as the kernel reports them (empty once
        the association is gone)."""
        return self._addresses(_SCTP_GET_LOCAL_ADDRS)

    @property
    def peer_addresses(self) -> list[tuple[str, int]]:
        """The peer's addresses in this association (several when it is multihomed)."""
        return self._addresses(_SCTP_GET_PEER_ADDRS)

    def fileno(self) -> int:
        """The socket's file descriptor (-1 once released), for diagnostics and
        socket options this class does not wrap."""
        return self._sock.fileno()

    def _addresses(self, option: int) -> list[tuple[str, int]]:
        if self._released:
            return []
        try:
            # A one-to-one socket ignores the id for peer addresses, but local ones need a
            # non-zero id to mean "this association" rather than "the endpoint".
            return _association_addresses(self._sock, option, self._assoc_id or 1)
        except OSError:
            return []

    def _read_status(self) -> None:
        """Read the negotiated stream counts and association id (SCTP_STATUS)."""
        self._assoc_id, _, self._inbound_streams, self._outbound_streams = sctp_status(self._sock)

    # -- Errors and states ---------------------------------------------------------------

    def _fail(self, error: AssociationError) -> None:
        """Nothing more will be read: the association is aborted or lost."""
        if self._ending is None:
            self._ending = _Ending.ERROR
            if self._peer_reset and isinstance(error, AssociationAbortedError):
                # A send saw the ABORT first; COMM_LOST's text has the peer's cause.
                self._error = error
            self._break(error)

    def _end_of_file(self) -> None:
        """The peer's SHUTDOWN completed: nothing more will be read."""
        if self._ending is None:
            self._ending = _Ending.END_OF_FILE
            self._peer_shut_down()

    def _raise_if_closed(self) -> None:
        if self._state is TransportState.CLOSED:
            raise trio.ClosedResourceError("this kernel transport was closed")

    def _send_error(self, exc: OSError) -> BaseException:
        """Turn a failed sendmsg into the exception the caller should see."""
        if self._state is not TransportState.OPEN:
            try:
                self._check_status()
            except (trio.ClosedResourceError, trio.BrokenResourceError) as status:
                return status
        # The state is recorded now: Linux reports ECONNRESET or ETIMEDOUT to one call
        # only, and later sends get EPIPE. Messages received before stay readable.
        if exc.errno == errno.ECONNRESET:
            self._peer_reset = True
            self._break(AssociationAbortedError("the peer aborted the association"))
            return self._broken_error()
        if exc.errno == errno.ETIMEDOUT:
            self._break(AssociationLostError("the association was lost (peer unreachable)"))
            return self._broken_error()
        if exc.errno in (errno.EPIPE, errno.ENOTCONN, errno.ESHUTDOWN):
            # Neither an ABORT nor a loss was reported (by a send or by receive()): the
            # peer's SHUTDOWN arrived before receive() read the notification of it.
            self._peer_shut_down()
            self._check_status()
        if exc.errno == errno.EMSGSIZE:
            limit = self._sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
            return ValueError(
                f"Linux refuses SCTP messages larger than the socket's send buffer "
                f"(SO_SNDBUF, {limit} bytes here, capped by net.core.wmem_max)"
            )
        return exc

    # -- Sending -------------------------------------------------------------------------

    async def _send(
        self, data: bytes | bytearray | memoryview, stream: int, ppid: int, unordered: bool
    ) -> None:
        # One sendmsg call: SCTP queues a message whole or not at all, also when the
        # sender is cancelled while waiting for room. Linux refuses (EMSGSIZE, raised as
        # ValueError) a message larger than the socket's send buffer.
        key = (stream, ppid, unordered)
        ancillary = self._ancillary.get(key)
        if ancillary is None:
            flags = _SCTP_UNORDERED if unordered else 0
            sndinfo = _SNDINFO.pack(stream, flags, socket.htonl(ppid), 0, 0)
            ancillary = [(IPPROTO_SCTP, _SCTP_SNDINFO, sndinfo)]
            if len(self._ancillary) < _ANCILLARY_CACHE_SIZE:
                self._ancillary[key] = ancillary
        buffers = [data]
        await trio.lowlevel.checkpoint_if_cancelled()
        # Fast path: nobody is waiting for room, so nobody is overtaken.
        if not self._send_lock.locked() and self._sendmsg(buffers, ancillary):
            await trio.lowlevel.cancel_shielded_checkpoint()
            return
        async with self._send_lock:
            while True:
                self._check_status()
                try:
                    await trio.lowlevel.wait_writable(self._sock)
                except trio.ClosedResourceError:
                    self._check_status()
                    raise
                if self._sendmsg(buffers, ancillary):
                    return

    def _sendmsg(
        self, buffers: list[bytes | bytearray | memoryview], ancillary: list[tuple[int, int, bytes]]
    ) -> bool:
        """One ``sendmsg``: whether the message was queued (``False``: no room yet)."""
        try:
            self._sock.sendmsg(buffers, ancillary)
        except BlockingIOError:
            return False
        except OSError as exc:
            raise self._send_error(exc) from exc
        return True

    async def _reset(self, stream: int) -> bool:
        # Linux refuses the request while messages of that stream are still unsent
        # (EAGAIN) or while another request of ours is unanswered (EINPROGRESS); both
        # only last about a round trip, and there is no event for their end, so this
        # retries with a short exponential back-off (5 ms to 200 ms).
        request = _RESET_STREAMS.pack(self._assoc_id, _SCTP_STREAM_RESET_OUTGOING, 1, stream)
        delay = RESET_RETRY_MIN
        while True:
            self._check_status()
            try:
                self._sock.setsockopt(IPPROTO_SCTP, _SCTP_RESET_STREAMS, request)
            except OSError as exc:
                if exc.errno == errno.ENOPROTOOPT:
                    await trio.lowlevel.checkpoint()
                    return False
                if exc.errno not in (errno.EAGAIN, errno.EINPROGRESS):
                    raise self._send_error(exc) from exc
                await trio.sleep(delay)
                delay = min(delay * 2, RESET_RETRY_MAX)
                continue
            await trio.lowlevel.checkpoint()
            return True

    async def _wait_sender_dry(self) -> None:
        # Linux tells it only as an event among what the receiver reads: poll. Data held
        # unsent means some in flight (a zero-window probe at least): 0 unacked is dry.
        delay = RESET_RETRY_MIN
        await trio.lowlevel.checkpoint_if_cancelled()
        while True:
            self._check_not_over()
            try:
                unacknowledged = sctp_status(self._sock)[1]
            except OSError:  # the association is gone: SO_ERROR says how (0: shut down)
                error = self._sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if error:
                    raise self._send_error(OSError(error, os.strerror(error))) from None
                unacknowledged = 0
            if not unacknowledged:
                await trio.lowlevel.cancel_shielded_checkpoint()
                return
            await trio.sleep(delay)
            delay = min(delay * 2, RESET_RETRY_MAX)

    # -- Receiving -----------------------------------------------------------------------

    async def _receive(self) -> Received:
        if True:
            if self._ready or self._ending is not None:
                await trio.lowlevel.checkpoint()
                self._raise_if_closed()
                return self._next_ready()
            await trio.lowlevel.checkpoint_if_cancelled()
            waited = False
            # One schedule point per call, placed where it costs least. A call that
            # waited for the socket has yielded: it returns what it read at once. A call
            # after one that did not wait yields *before* its recvmsg, which lets the
            # tasks it woke (and senders in this process) run first, so that the recvmsg
            # finds more waiting and fewer calls end in a failed recvmsg plus an epoll
            # round. Otherwise (the first call after a wait) it reads first and yields
            # after, once. A call right after receive_nowait() found the socket empty
            # waits at once, without a recvmsg that would fail again (readiness is
            # level-triggered: what arrived in between is not missed).
            yielded = False
            must_wait = self._known_empty
            self._known_empty = False
            if self._yield_first:
                self._yield_first = False
                await trio.lowlevel.cancel_shielded_checkpoint()
                self._raise_if_closed()
                yielded = True
            while True:
                if must_wait:
                    await trio.lowlevel.wait_readable(self._sock)
                    yielded = waited = True
                try:
                    item = self._read_piece()
                except BlockingIOError:
                    must_wait = True
                    continue
                except (trio.EndOfChannel, trio.BrokenResourceError):
                    if not yielded:
                        await trio.lowlevel.cancel_shielded_checkpoint()
                    raise
                if item is not None:
                    break
            if not waited:
                self._yield_first = True
                if not yielded:
                    await trio.lowlevel.cancel_shielded_checkpoint()
            return item

    def _receive_nowait(self) -> Received:
        # Reads with recvmsg, without a checkpoint.
        if self._ready or self._ending is not None:
            return self._next_ready()
        while True:
            try:
                item = self._read_piece()
            except BlockingIOError:
                # Empty: the next receive() waits at once, without yielding first.
                self._yield_first = False
                self._known_empty = True
                raise trio.WouldBlock from None
            if item is not None:
                self._known_empty = False
                return item

    def _next_ready(self) -> Received:
        """What was read ahead, then the end of the association."""
        if self._ready:
            return self._ready.popleft()
        self._end_of_receive()

    def _receive_failed(self, exc: OSError) -> NoReturn:
        if exc.errno == errno.ECONNRESET:
            self._fail(AssociationAbortedError("the peer aborted the association"))
        else:
            self._fail(AssociationLostError(f"the association failed: {exc.strerror}"))
        try:
            self._end_of_receive()
        except BaseException as error:
            raise error from exc

    def _recv_piece(self) -> tuple[int, list[tuple[int, int, bytes]], int]:
        """One ``recvmsg`` into our preallocated buffers: ``(nbytes, ancillary, flags)``."""
        nbytes, ancillary, flags, _address = self._sock.recvmsg_into(self._buffers, _ANCILLARY_SIZE)
        return nbytes, ancillary, flags

    def _read_piece(self) -> Received | None:
        """Read one piece (one ``recvmsg``) and act on it: return a complete message or
        event, or ``None`` when there is nothing to return yet (a piece of a larger
        message, or a notification consumed here). Raises BlockingIOError when there is
        nothing to read, and the end of the association when it is reached."""
        try:
            nbytes, ancillary, flags = self._recv_piece()
        except BlockingIOError:
            raise
        except OSError as exc:
            self._receive_failed(exc)
        if flags & _MSG_NOTIFICATION:
            notification = self._collect_notification(self._view[:nbytes], flags)
            if notification is None:
                return None
            return self._on_notification(notification)
        if nbytes == 0:
            # One-to-one sockets read end-of-file once the peer's SHUTDOWN completed.
            self._end_of_file()
            return self._next_ready()
        if self._partial is None:
            info = self._partial_info = _parse_rcvinfo(ancillary)
            if flags & _MSG_EOR:  # the common case: a whole message in one read
                if nbytes > self._max_message_size:
                    self._message_too_large(info[0], nbytes)
                return Message(bytes(self._view[:nbytes]), info[0], info[1], info[2])
            self._partial = bytearray()
        size = len(self._partial) + nbytes
        if size > self._max_message_size:
            self._message_too_large(self._partial_info[0], size)
        self._partial += self._view[:nbytes]
        if not flags & _MSG_EOR:
            return None
        data, self._partial = bytes(self._partial), None
        stream, ppid, unordered = self._partial_info
        return Message(data, stream=stream, ppid=ppid, unordered=unordered)

    def _message_too_large(self, stream: int, size: int) -> None:
        self._partial = None
        qualifier = "at least " if size > len(self._buffer) else ""
        self._fail(
            RemoteProtocolError(
                f"inbound message of {qualifier}{size} bytes exceeds max_message_size "
                f"({self._max_message_size}); association aborted",
                stream=stream,
            )
        )
        self._abort_socket()
        self._end_of_receive()

    def _collect_notification(self, piece: memoryview, flags: int) -> bytes | None:
        """Reassemble a notification; bounded by max_message_size (a SEND_FAILED one
        carries a whole undelivered message, which is truncated beyond that)."""
        if self._partial_notification is None and flags & _MSG_EOR:
            return bytes(piece)
        if self._partial_notification is None:
            self._partial_notification = bytearray()
        room = self._max_message_size - len(self._partial_notification)
        self._partial_notification += piece[: max(room, 0)]
        if not flags & _MSG_EOR:
            return None
        data, self._partial_notification = bytes(self._partial_notification), None
        return data

    def _on_notification(self, data: bytes) -> Received | None:
        kind, flags, length = _NOTIFICATION_HEADER.unpack_from(data)
        if kind == _SCTP_ASSOC_CHANGE:
            return self._on_assoc_change(data)
        if kind == _SCTP_STREAM_RESET_EVENT:
            # Only the peer resetting its outgoing streams (our inbound ones) is news for
            # the caller; the answers to our own requests are not.
            if not flags & _SCTP_STREAM_RESET_INCOMING_SSN or flags & (
                _SCTP_STREAM_RESET_DENIED | _SCTP_STREAM_RESET_FAILED
            ):
                return None
            end = min(length, len(data))
            count = max(end - _STREAM_RESET_EVENT_LIST, 0) // 2
            streams = struct.unpack_from(f"={count}H", data, _STREAM_RESET_EVENT_LIST)
            return StreamReset(streams or tuple(range(self._inbound_streams)))
        if kind == _SCTP_SHUTDOWN_EVENT:
            self._peer_shut_down()
            return ShutdownReceived()
        return _parse_event(data)

    def _on_assoc_change(self, data: bytes) -> Received | None:
        state, error, outbound, inbound, _assoc = _ASSOC_CHANGE.unpack_from(
            data, _NOTIFICATION_HEADER.size
        )
        if state == AssociationState.COMM_UP.value:
            return None  # connect/accept already read the counts
        if state == AssociationState.RESTART.value:
            self._outbound_streams, self._inbound_streams = outbound, inbound
            self._ancillary.clear()
            return AssociationChange(AssociationState.RESTART, outbound, inbound, error)
        if state == AssociationState.SHUTDOWN_COMPLETE.value:
            self._end_of_file()
            return self._next_ready()
        if state in (AssociationState.COMM_LOST.value, AssociationState.CANT_START.value):
            self._on_comm_lost(data[_ASSOC_CHANGE_INFO:], socket.ntohs(error))
            return self._next_ready()
        return None

    def _on_comm_lost(self, info: bytes, cause: int) -> None:
        """The association is gone: collect the SEND_FAILED notifications the kernel
        queued behind COMM_LOST, and work out whether the peer aborted."""
        so_error = self._sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        while True:
            try:
                nbytes, _ancillary, flags = self._recv_piece()
            except BlockingIOError:
                break
            except OSError as exc:
                so_error = so_error or (exc.errno or 0)
                break
            if not flags & _MSG_NOTIFICATION:
                if nbytes == 0:
                    break
                continue
            data = self._collect_notification(self._view[:nbytes], flags)
            if data is not None:
                event = _parse_event(data)
                if isinstance(event, SendFailed):
                    self._ready.append(event)
        self._partial = None
        reason = ""
        if len(info) >= 4:
            # The ABORT's first error cause; a User-Initiated Abort carries a reason.
            cause, length = struct.unpack_from("!HH", info)
            if cause == _USER_INITIATED_ABORT and length > 4:
                reason = bytes(info[4:length]).decode(errors="replace")
        if so_error == errno.ECONNRESET or self._peer_reset:
            detail = f" ({_cause_text(cause)})" if cause else ""
            if reason:
                detail = f": {reason}"
            self._fail(AssociationAbortedError(f"the peer aborted the association{detail}"))
        else:
            reason = os.strerror(so_error) if so_error else "peer unreachable"
            self._fail(AssociationLostError(f"the association was lost: {reason}"))

    # -- Closing -------------------------------------------------------------------------

    def _release(self) -> None:
        """Wake every task blocked on the socket, then close it."""
        if not self._released:
            self._released = True
            trio.lowlevel.notify_closing(self._sock)
            self._sock.close()

    def _abort_socket(self) -> None:
        """Send ABORT (linger {1, 0} makes close() abort) and release the socket."""
        if not self._released:
            with contextlib.suppress(OSError):  # the association may be gone already
                self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self._release()

    async def _close(self, previous: TransportState) -> None:
        # shutdown(SHUT_WR), then read and discard until SHUTDOWN_COMP, because Linux
        # turns close() into an ABORT while unread data is queued; at most close_timeout
        # seconds, then abort.
        if self._released or self._ending is not None:
            self._release()
            await trio.lowlevel.checkpoint()
            return
        # Wake blocked receivers and senders (ClosedResourceError) before we read.
        trio.lowlevel.notify_closing(self._sock)
        try:
            # Cancelled already? Then abort (in aclose), without sending SHUTDOWN first.
            await trio.lowlevel.checkpoint_if_cancelled()
            # ENOTCONN: the association is gone already; what is queued is still drained.
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_WR)
            with trio.move_on_after(self.close_timeout) as scope:
                await self._drain_until_closed()
            if scope.cancelled_caught:
                self._abort_socket()
        except trio.ClosedResourceError:
            if not self._released:  # not a concurrent abort(): a real error
                raise
        self._release()
        await trio.lowlevel.checkpoint()

    async def _drain_until_closed(self) -> None:
        """Read and discard until SHUTDOWN_COMP, COMM_LOST or end of file."""
        # A notification piece without MSG_EOR is continued by the next piece, whose
        # start is not a notification header.
        continuation = self._partial_notification is not None
        while not self._released:
            try:
                nbytes, _ancillary, flags = self._recv_piece()
            except BlockingIOError:
                await trio.lowlevel.wait_readable(self._sock)
                continue
            except OSError:
                return
            if flags & _MSG_NOTIFICATION:
                starts_notification = not continuation
                continuation = not flags & _MSG_EOR
                if starts_notification and nbytes >= _ASSOC_CHANGE_INFO:
                    kind, _flags, _length, state = struct.unpack_from("=HHIH", self._buffer)
                    if kind == _SCTP_ASSOC_CHANGE and state in (
                        AssociationState.SHUTDOWN_COMPLETE.value,
                        AssociationState.COMM_LOST.value,
                    ):
                        return
            elif nbytes == 0:
                return

    def _abort(self, reason: str) -> None:
        # The reason cannot travel here: Linux refuses the SCTP_ABORT send flag (which
        # would carry it in a User-Initiated Abort cause) on one-to-one sockets with
        # EINVAL, so the ABORT goes out with an empty cause 12. Reasons the peer sends
        # us are read (see _on_comm_lost).
        del reason
        self._abort_socket()
