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
``setsockopt`` calls. pysctp (``_sctp.sctp_send_msg`` / ``sctp_recv_msg``, called
directly, skipping its Python wrappers) was measured against it inside the test VM:
Debian's 6.1 kernel under QEMU TCG, loopback, ``SCTP_NODELAY``, one Trio task sending
and one receiving, 20,000 messages per cell as 10 interleaved rounds of 2,000 (every
variant in every round, so all saw the same load from the other VMs sharing the
2-core host). Microseconds per message, median of the rounds (best round); VM times
are ~14x native::

                                      100 B         16 KiB
    raw loop, stdlib cmsg             842 (572)    1234 (750)
    raw loop, pysctp                  895 (653)    1174 (625)
    this transport                   1310 (753)    1200 (822)
    ... sending with pysctp          1070 (789)    1313 (911)
    ... sending and receiving pysctp 1053 (723)    1426 (890)

An earlier run of 8 rounds had the raw loops at 847 (574) vs 744 (541) for 100 B and
1075 (958) vs 982 (721) for 16 KiB: the sign of the difference flips between runs.
One call on a fast-failing path (send to a bad stream, receive on an empty socket)
costs 85 (45) us with ``sendmsg`` vs 51 (38) with pysctp, and 55 (42) vs 58 (33) to
receive: under 5% of a message, which is dominated by the kernel's own work. Neither
binding is reliably faster, so the choice rests on the rest: the standard library needs
no extra (LGPL, C) dependency, speaks the current RFC 6458 API (SNDINFO/RCVINFO) where
pysctp reads the deprecated ``SCTP_SNDRCV`` that needs the obsolete whole-struct
``SCTP_EVENTS`` data-io subscription (which resets the other subscriptions),
``recvmsg_into`` reads into one preallocated buffer instead of allocating ``maxlen``
bytes per call, and pysctp hands the PPID over in network byte order on receive while
its ``sctp_send`` silently applies ``ntohl`` on send. Nagle (``SCTP_NODELAY`` off) made
100-byte messages about 2x slower (1974 vs 935 us), so it is turned off, as Trio does for
TCP.

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
with other messages). Pieces are counted against
``max_message_size`` as they arrive, and a message that exceeds it aborts the
association with :class:`~trio_sctls.RemoteProtocolError`, so a peer cannot make us
buffer without bound. Reassembly state lives on the transport, so a receive cancelled
between pieces loses nothing. Fragmentation is never disabled (RFC 3436 section 3.2).
Linux refuses (``EMSGSIZE``, raised as :class:`ValueError`) to send a message larger than
the socket's send buffer (425,984 bytes with default sysctls, see below), far above the
largest TLS record. A sender whose peer does not read waits: SCTP's receive window
pushes back, as a full TCP window does.

**Buffers.** Linux gives SCTP sockets fixed buffers (``net.core.wmem_default`` /
``rmem_default``, 212,992 bytes) where TCP's grow with the connection (up to 4 and 6
MiB). Every socket asks for 1 MiB send and receive buffers before connecting or
listening, which Linux caps at twice ``net.core.wmem_max`` / ``rmem_max``: 425,984
bytes by default (raise those sysctls to let it have more). The reason is measured, in
the VM (benchmarks/throughput.py, 16 channels writing 16 KiB records over one
association, loopback): with the default receive buffer the receiver now and then
discarded DATA chunks for want of buffer space (``SctpInDataChunkDiscards`` in
/proc/net/sctp/snmp; presumably the window counts payload bytes while the buffer limit
counts the kernel's larger per-packet allocations), and each discard that fast
retransmit did not repair cost a T3 retransmission timeout, at least ``rto_min`` (1 s),
in a transfer of 1 to 3 s. In one interleaved run of 6 transfers per variant: default
buffers, one discard and one timeout; 425,984 bytes, one discard, repaired by fast
retransmit; buffers forced to 1 or 4 MiB, none. In a full benchmark run with 425,984
bytes: 4 discards in 5 transfers, all repaired by fast retransmit. Throughput without a
stall was the same for all sizes (CPU-bound either way).

**Sending cost.** The ``SCTP_SNDINFO`` control message of each (stream, ppid, unordered)
is packed and validated once and then reused: per message, a send is a dictionary
look-up and one ``sendmsg``.

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

**Addresses.** Several peer addresses are given to ``sctp_connectx`` and several local
ones to ``sctp_bindx`` (both are ``setsockopt`` calls taking packed ``sockaddr``
structures); mixing IPv4 and IPv6 uses an IPv6 socket. IPv4-mapped IPv6 addresses are
reported as plain IPv4. Address lists are read with ``getsockopt(SCTP_GET_PEER_ADDRS /
SCTP_GET_LOCAL_ADDRS)`` through ``ctypes``, because those calls read the association id
from the caller's buffer, which ``socket.getsockopt`` leaves uninitialised.

The socket API itself (constants, struct layouts, socket options, address packing and
notification parsing) lives in :mod:`trio_sctls.transport._linux`.

**Struct layouts** (x86-64, checked against Debian's 6.1 kernel): ``sctp_initmsg``
``=HHHH`` (8 bytes); ``sctp_sndinfo`` ``@HHIIi`` (16); ``sctp_rcvinfo`` ``@HHHIIIIi``
(28: two padding bytes after the flags, PPID at offset 8); ``sctp_event`` ``@iHB`` padded
to 8; ``sctp_status`` 176 bytes starting ``=iiIHHHHI`` (``sstat_state`` is the kernel's
state plus one); the notifications as parsed below. ``SCTP_GET_LOCAL_ADDRS`` reports
an ``optlen`` that leaves out its 8-byte header, so the address count is what is
trusted, not the length.
"""

from __future__ import annotations

import contextlib
import enum
import errno
import os
import socket
import struct
from collections import deque
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, NoReturn, final

import trio

if TYPE_CHECKING:
    from .._options import TransportOptions

from .._errors import (
    AssociationAbortedError,
    AssociationError,
    AssociationLostError,
    RemoteProtocolError,
    SCTPNotSupportedError,
)
from ._base import (
    DEFAULT_MAX_MESSAGE_SIZE,
    AssociationChange,
    AssociationState,
    Message,
    MessageListener,
    MessageTransport,
    Received,
    SendFailed,
    ShutdownReceived,
    StreamReset,
    TransportState,
)
from ._linux import (
    _ANCILLARY_SIZE,
    _ASSOC_CHANGE,
    _ASSOC_CHANGE_INFO,
    _IGNORED_ACCEPT_ERRORS,
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
    _SCTP_SOCKOPT_BINDX_ADD,
    _SCTP_SOCKOPT_CONNECTX,
    _SCTP_STATUS,
    _SCTP_STREAM_RESET_DENIED,
    _SCTP_STREAM_RESET_EVENT,
    _SCTP_STREAM_RESET_FAILED,
    _SCTP_STREAM_RESET_INCOMING_SSN,
    _SCTP_STREAM_RESET_OUTGOING,
    _SCTP_UNORDERED,
    _SNDINFO,
    _STATUS,
    _STATUS_SIZE,
    _STREAM_RESET_EVENT_LIST,
    _USER_INITIATED_ABORT,
    GRACEFUL_CLOSE_TIMEOUT,
    IPPROTO_SCTP,
    RECEIVE_BUFFER_SIZE,
    RESET_RETRY_MAX,
    RESET_RETRY_MIN,
    _association_addresses,
    _cause_text,
    _check_max_message_size,
    _check_port,
    _check_stream_counts,
    _configure,
    _configure_io,
    _hosts_list,
    _pack_sockaddr,
    _parse_event,
    _parse_rcvinfo,
    _resolve,
    _sctp_socket,
)

#: Most distinct (stream, ppid, unordered) control messages kept per transport.
_ANCILLARY_CACHE_SIZE = 1024

__all__ = [
    "GRACEFUL_CLOSE_TIMEOUT",
    "KernelListener",
    "KernelTransport",
    "connect_kernel",
    "listen_kernel",
    "open_client",
    "open_server",
]

#: Socket buffer size asked for (SO_SNDBUF and SO_RCVBUF); Linux caps it at twice
#: net.core.wmem_max / rmem_max (425,984 bytes with default sysctls). See "Buffers" in
#: the module docstring.
SOCKET_BUFFER_SIZE = 1024 * 1024


def _enlarge_buffers(sock: socket.socket) -> None:
    """Ask for :data:`SOCKET_BUFFER_SIZE` send and receive buffers, before connect or
    listen (the association's receive window is sized from the receive buffer then, and
    accepted sockets inherit both). Only ever grows them: a system whose defaults are
    larger keeps them."""
    for option in (socket.SO_SNDBUF, socket.SO_RCVBUF):
        # getsockopt reports the doubled value the kernel keeps; setsockopt doubles.
        if sock.getsockopt(socket.SOL_SOCKET, option) < SOCKET_BUFFER_SIZE:
            sock.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER_SIZE)


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
        raw = self._sock.getsockopt(IPPROTO_SCTP, _SCTP_STATUS, _STATUS_SIZE)
        assoc_id, _state, _rwnd, _unacked, _pending, inbound, outbound, _frag = _STATUS.unpack_from(
            raw
        )
        self._assoc_id, self._inbound_streams, self._outbound_streams = assoc_id, inbound, outbound

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
        if not self._send_lock.locked():
            # Fast path: nobody is waiting for room, so nobody is overtaken.
            try:
                self._sock.sendmsg(buffers, ancillary)
            except BlockingIOError:
                pass
            except OSError as exc:
                raise self._send_error(exc) from exc
            else:
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
                try:
                    self._sock.sendmsg(buffers, ancillary)
                except BlockingIOError:
                    continue
                except OSError as exc:
                    raise self._send_error(exc) from exc
                return

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

    def _read_piece(self) -> Received | None:
        """Read one piece (one ``recvmsg``) and act on it: return a complete message or
        event, or ``None`` when there is nothing to return yet (a piece of a larger
        message, or a notification consumed here). Raises BlockingIOError when there is
        nothing to read, and the end of the association when it is reached."""
        try:
            nbytes, ancillary, flags, _address = self._sock.recvmsg_into(
                self._buffers, _ANCILLARY_SIZE
            )
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
                nbytes, _ancillary, flags, _address = self._sock.recvmsg_into(
                    self._buffers, _ANCILLARY_SIZE
                )
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
                nbytes, _ancillary, flags, _address = self._sock.recvmsg_into(
                    self._buffers, _ANCILLARY_SIZE
                )
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


# --- Connecting and listening ----------------------------------------------------------


async def _connect_socket(sock: socket.socket, packed: bytes) -> None:
    """sctp_connectx, waiting for the association to come up."""
    try:
        sock.setsockopt(IPPROTO_SCTP, _SCTP_SOCKOPT_CONNECTX, packed)
    except BlockingIOError:
        pass  # EINPROGRESS
    else:
        await trio.lowlevel.checkpoint()
    # A connecting one-to-one socket polls writable once ESTABLISHED, or reports an error.
    await trio.lowlevel.wait_writable(sock)
    code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    if code:
        raise OSError(code, f"SCTP connect failed: {os.strerror(code)}")
    try:
        sock.getpeername()
    except OSError as exc:
        raise OSError(exc.errno, "the SCTP association could not be established") from exc


async def connect_kernel(
    hosts: str | Sequence[str],
    port: int,
    *,
    outbound_streams: int = 10,
    max_inbound_streams: int = 10,
    local_addresses: Sequence[str] | None = None,
    local_port: int = 0,
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
) -> KernelTransport:
    """Establish an SCTP association with kernel SCTP and return it.

    Args:
        hosts: the peer's address or name, or several addresses of one multihomed peer
            (all are given to ``sctp_connectx``; each name contributes its first
            address). A single name that resolves to several addresses is tried
            address by address until one answers.
        port: the peer's SCTP port.
        outbound_streams: streams we ask to send on (SCTP_INITMSG).
        max_inbound_streams: most streams we accept from the peer.
        local_addresses: addresses to bind (several: multihoming with ``sctp_bindx``).
        local_port: local port (0: the kernel picks one).
        max_message_size: largest inbound message accepted (at least 18,437 bytes).

    Returns:
        The established transport; its stream counts are the negotiated ones.

    Raises:
        SCTPNotSupportedError: this kernel has no SCTP.
        OSError: the peer could not be reached or refused the association.
        ValueError: bad stream counts, port or message size.
    """
    _check_stream_counts(outbound_streams, max_inbound_streams)
    _check_max_message_size(max_message_size)
    _check_port(port)
    _check_port(local_port)
    names = _hosts_list(hosts, "hosts")
    resolved = [await _resolve(name, port) for name in names]
    local: list[tuple[int, str, int]] = []
    for name in local_addresses or ():
        local.append((await _resolve(name, local_port, passive=True))[0])
    if len(resolved) == 1:
        attempts = [[address] for address in resolved[0]]
    else:
        attempts = [[addresses[0] for addresses in resolved]]
    last_error: OSError | None = None
    for peers in attempts:
        try:
            sock = await _open_connected(
                peers, port, local, local_port, outbound_streams, max_inbound_streams
            )
        except SCTPNotSupportedError:
            raise
        except OSError as exc:
            last_error = exc
            continue
        return KernelTransport(sock, max_message_size=max_message_size)
    assert last_error is not None
    if len(attempts) == 1:
        raise last_error
    raise OSError(
        last_error.errno,
        f"all {len(attempts)} addresses of {names[0]!r} failed; last: {last_error}",
    ) from last_error


async def _open_connected(
    peers: list[tuple[int, str, int]],
    port: int,
    local: list[tuple[int, str, int]],
    local_port: int,
    outbound_streams: int,
    max_inbound_streams: int,
) -> socket.socket:
    families = {family for family, _address, _scope in peers + local}
    family = socket.AF_INET6 if socket.AF_INET6 in families else socket.AF_INET
    sock = _sctp_socket(family)
    try:
        if family == socket.AF_INET6 and socket.AF_INET in families:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        _configure(sock, outbound_streams, max_inbound_streams)
        _enlarge_buffers(sock)
        if local:
            packed_local = b"".join(
                _pack_sockaddr(fam, address, local_port, scope) for fam, address, scope in local
            )
            sock.setsockopt(IPPROTO_SCTP, _SCTP_SOCKOPT_BINDX_ADD, packed_local)
        elif local_port:
            sock.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", local_port))
        await _connect_socket(
            sock,
            b"".join(_pack_sockaddr(fam, address, port, scope) for fam, address, scope in peers),
        )
    except BaseException:
        with contextlib.suppress(OSError):  # abort a half-open association, if any
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        trio.lowlevel.notify_closing(sock)
        sock.close()
        raise
    return sock


@final
class KernelListener(MessageListener):
    """A listening one-to-one kernel SCTP socket; :meth:`accept` returns established
    :class:`KernelTransport` objects. Create it with :func:`listen_kernel`."""

    kind = "kernel"

    def __init__(self, sock: socket.socket, *, max_message_size: int) -> None:
        """Wrap a bound, configured, listening socket (internal: use
        :func:`listen_kernel`)."""
        self._sock = sock
        self._port = int(sock.getsockname()[1])
        self._max_message_size = max_message_size

    def __repr__(self) -> str:
        return f"<KernelListener port={self.port}{' closed' if self._closed else ''}>"

    @property
    def port(self) -> int:
        """The SCTP port this listener is bound to."""
        return self._port

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """The local addresses this listener is bound to (several when multihomed)."""
        if self._closed:
            return []
        try:
            return _association_addresses(self._sock, _SCTP_GET_LOCAL_ADDRS, 0)
        except OSError:
            return []

    if TYPE_CHECKING:

        async def accept(self) -> KernelTransport:
            """The next association (see :meth:`MessageListener.accept`)."""

    async def _accept(self) -> KernelTransport:
        await trio.lowlevel.checkpoint_if_cancelled()
        waited = False
        while True:
            if self._closed:
                raise trio.ClosedResourceError("this listener was closed")
            try:
                sock, _address = self._sock.accept()
            except BlockingIOError:
                await trio.lowlevel.wait_readable(self._sock)
                waited = True
                continue
            except OSError as exc:
                if exc.errno in _IGNORED_ACCEPT_ERRORS:
                    continue
                raise
            try:
                sock.setblocking(False)
                _configure_io(sock)
                transport = KernelTransport(sock, max_message_size=self._max_message_size)
            except OSError:
                sock.close()  # the association died before we got to it
                continue
            if not waited:
                await trio.lowlevel.cancel_shielded_checkpoint()
            return transport

    def _close(self) -> None:
        # The kernel aborts the associations not yet accepted.
        trio.lowlevel.notify_closing(self._sock)
        self._sock.close()


async def listen_kernel(
    port: int,
    *,
    hosts: str | Sequence[str] | None = None,
    outbound_streams: int = 10,
    max_inbound_streams: int = 10,
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    backlog: int = 128,
) -> KernelListener:
    """Listen for SCTP associations with kernel SCTP.

    Args:
        port: the port to bind (0: the kernel picks one; see :attr:`KernelListener.port`).
        hosts: local address(es) to bind, several for multihoming (``sctp_bindx``); each
            name contributes its first address. ``None``: every address, IPv6 and IPv4.
        outbound_streams: streams we offer to send on (capped by each peer's maximum).
        max_inbound_streams: most streams we accept from a peer.
        max_message_size: largest inbound message accepted (at least 18,437 bytes).
        backlog: the ``listen()`` backlog.

    Raises:
        SCTPNotSupportedError: this kernel has no SCTP.
        OSError: the address could not be bound.
        ValueError: bad stream counts, port or message size.
    """
    _check_stream_counts(outbound_streams, max_inbound_streams)
    _check_max_message_size(max_message_size)
    _check_port(port)
    if hosts is None:
        try:
            sock = _sctp_socket(socket.AF_INET6)
        except SCTPNotSupportedError:
            raise
        except OSError as exc:
            if exc.errno != errno.EAFNOSUPPORT:
                raise
            sock = _sctp_socket(socket.AF_INET)
        try:
            if sock.family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
                sock.bind(("::", port))
            else:
                sock.bind(("0.0.0.0", port))
        except BaseException:
            sock.close()
            raise
    else:
        local = [
            (await _resolve(name, port, passive=True))[0] for name in _hosts_list(hosts, "hosts")
        ]
        families = {family for family, _address, _scope in local}
        family = socket.AF_INET6 if socket.AF_INET6 in families else socket.AF_INET
        sock = _sctp_socket(family)
        try:
            if family == socket.AF_INET6 and socket.AF_INET in families:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            packed = b"".join(
                _pack_sockaddr(fam, address, port, scope) for fam, address, scope in local
            )
            sock.setsockopt(IPPROTO_SCTP, _SCTP_SOCKOPT_BINDX_ADD, packed)
        except BaseException:
            sock.close()
            raise
    try:
        _configure(sock, outbound_streams, max_inbound_streams)
        _enlarge_buffers(sock)
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    await trio.lowlevel.checkpoint()
    return KernelListener(sock, max_message_size=max_message_size)


@asynccontextmanager
async def open_client(
    hosts: tuple[str, ...] | None, port: int, options: TransportOptions
) -> AsyncIterator[KernelTransport]:
    """:func:`connect_kernel` from :class:`~trio_sctls.TransportOptions`: yields the
    association; whatever is still open on exit is aborted. ``hosts`` defaults to
    127.0.0.1."""
    transport = await connect_kernel(
        hosts or "127.0.0.1",
        port,
        outbound_streams=options.outbound_streams,
        max_inbound_streams=options.max_inbound_streams,
        max_message_size=options.max_message_size,
        local_addresses=options.local_addresses,
    )
    try:
        yield transport
    finally:
        transport.abort()  # a no-op once closed


@asynccontextmanager
async def open_server(
    port: int, hosts: tuple[str, ...] | None, options: TransportOptions
) -> AsyncIterator[KernelListener]:
    """:func:`listen_kernel` from :class:`~trio_sctls.TransportOptions`: yields the
    listener; it is closed on exit (accepted associations are sockets of their own and
    live on)."""
    listener = await listen_kernel(
        port,
        hosts=hosts,
        outbound_streams=options.outbound_streams,
        max_inbound_streams=options.max_inbound_streams,
        max_message_size=options.max_message_size,
    )
    try:
        yield listener
    finally:
        with trio.CancelScope(shield=True):
            await listener.aclose()
