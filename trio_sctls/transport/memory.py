"""An in-process SCTP association: two :class:`MemoryTransport` ends joined by a link.

For tests and notebooks. It keeps the properties of SCTP that the layers above rely on:

* messages stay whole, ordered per stream, independent across streams;
* stream counts are negotiated like an INIT/INIT-ACK exchange (each side's outbound count
  is capped by the other's maximum inbound count);
* a bounded receive window: a sender waits while the peer holds ``window`` unread bytes,
  as SCTP's rwnd pushes back on a sender whose peer does not read;
* graceful shutdown (queued messages are delivered, then :class:`ShutdownReceived`, then
  :class:`trio.EndOfChannel`) and abort (the peer gets :class:`AssociationAbortedError`);
* SCTP-AUTH (RFC 4895) when both ends ask for it (``auth=True``): each end has its own
  key table (``transport.auth``), messages carry the sender's active key, and the
  receiver drops and counts those it cannot verify (see :mod:`._memory_auth`).

A per-direction ``delay(stream) -> seconds`` hook holds back the messages of chosen
streams while the others flow, for head-of-line experiments. Delivery times are kept
monotonic per stream, so a delay never reorders a stream. It is task-free: the receiver
sleeps until the earliest due message, so no task outlives the transports.

Ports live in a process-wide registry (:func:`listen_memory` / :func:`connect_memory`), so
``serve(..., transport="memory")`` and ``open_association(..., transport="memory")`` pair up
the way their kernel counterparts do.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, final

import trio

if TYPE_CHECKING:
    from .._options import TransportOptions

from .._errors import AssociationAbortedError, AssociationLostError, RemoteProtocolError
from ._auth import AuthKeys
from ._base import (
    DEFAULT_MAX_MESSAGE_SIZE,
    Message,
    MessageListener,
    MessageTransport,
    Received,
    ShutdownReceived,
    StreamReset,
    TransportState,
    aborted_on_exit,
    closed_on_exit,
)
from ._memory_auth import MemoryAuthKeys, Signature
from ._setup import stream_arguments

#: Bytes a receiver may hold unread before senders wait; like a default SCTP rwnd.
DEFAULT_WINDOW = 1024 * 1024

StreamDelay = Callable[[int], float]

_sequence = itertools.count()


class _Inbox:
    """One direction of the link: what the receiving end has not read yet."""

    def __init__(self, window: int) -> None:
        self.window = window
        self.heap: list[tuple[float, int, Message | StreamReset, Signature | None]] = []
        self.buffered = 0
        self.last_due: dict[int, float] = {}
        # Set when the sending end shut down gracefully: ShutdownReceived follows the
        # messages it sent before.
        self.shutdown = False
        self.shutdown_reported = False
        self.arrived = trio.lowlevel.ParkingLot()
        self.drained = trio.lowlevel.ParkingLot()

    def put(self, message: Message, delay: float, signature: Signature | None = None) -> None:
        now = trio.current_time()
        # Monotonic per stream: a delay holds a stream back but never reorders it.
        due = max(now + delay, self.last_due.get(message.stream, -math.inf))
        if not message.unordered:
            self.last_due[message.stream] = due
        heapq.heappush(self.heap, (due, next(_sequence), message, signature))
        self.buffered += len(message.data)
        self.arrived.unpark_all()

    def put_reset(self, stream: int) -> None:
        # Performed after what is queued on the stream, as RFC 6525 section 5.1.2 asks.
        due = self.last_due.get(stream, trio.current_time())
        heapq.heappush(self.heap, (due, next(_sequence), StreamReset((stream,)), None))
        self.arrived.unpark_all()

    def has_room(self, size: int) -> bool:
        # A message larger than the whole window still goes through once the peer has
        # read everything, as SCTP lets one message through an empty window.
        return self.buffered == 0 or self.buffered + size <= self.window

    def pop_due(self, keys: MemoryAuthKeys | None) -> Message | StreamReset | None:
        """The earliest message that is due now, if any; with SCTP-AUTH (``keys``),
        messages whose signature does not verify are dropped on the way."""
        while self.heap and self.heap[0][0] <= trio.current_time():
            _, _, item, signature = heapq.heappop(self.heap)
            if type(item) is Message:
                self.buffered -= len(item.data)
                self.drained.unpark_all()
                if keys is not None and not keys.verify(signature):
                    continue
            return item
        return None

    def wake(self) -> None:
        self.arrived.unpark_all()
        self.drained.unpark_all()


@dataclass(frozen=True, slots=True)
class _End:
    """What one end brings to the association: its INIT's stream counts, its message
    limit, the delay it puts on what it sends, and its address."""

    outbound: int
    max_inbound: int
    max_message_size: int
    delay: StreamDelay | None = None
    address: tuple[str, int] = ("memory", 0)

    def __post_init__(self) -> None:
        for name, count in (("outbound", self.outbound), ("max_inbound", self.max_inbound)):
            if not 1 <= count <= 65535:
                raise ValueError(f"{name} streams must be in 1..65535, not {count}")


@final
class MemoryTransport(MessageTransport):
    """One end of an in-process association. Create pairs with :func:`memory_pair` or
    through :func:`listen_memory` / :func:`connect_memory`.

    It plays both SCTP stacks: what the peer's stack would do on receiving (abort on a
    message over its limit, report our SHUTDOWN or ABORT) is done here, on the peer
    object, when we send.
    """

    kind = "memory"

    def __init__(self, inbox: _Inbox, me: _End, peer: _End, *, auth: bool = False) -> None:
        self._inbox = inbox
        self._auth_keys = MemoryAuthKeys() if auth else None
        # Stream counts as INIT/INIT ACK settle them: each side sends on at most as many
        # streams as the other accepts.
        self._outbound_streams = min(me.outbound, peer.max_inbound)
        self._inbound_streams = min(peer.outbound, me.max_inbound)
        self._max_message_size = me.max_message_size
        self._delay = me.delay
        self._local = me.address
        self._peer_address = peer.address
        self._peer: MemoryTransport = self  # set by _pair

    @property
    def local_addresses(self) -> list[tuple[str, int]]:
        return [self._local]

    @property
    def auth(self) -> AuthKeys | None:
        """This end's SCTP-AUTH keys when the association negotiated SCTP-AUTH."""
        return self._auth_keys

    @property
    def auth_keys(self) -> MemoryAuthKeys | None:
        """The same table with the simulation's counters (``dropped``, ``key_ids``)."""
        return self._auth_keys

    @property
    def peer_addresses(self) -> list[tuple[str, int]]:
        return [self._peer_address]

    def _wake_all(self) -> None:
        self._inbox.wake()
        self._peer._inbox.wake()

    # -- the peer's stack -------------------------------------------------------------------

    def _aborted_by_peer(self, reason: str) -> None:
        detail = f": {reason}" if reason else ""
        self._break(AssociationAbortedError(f"the peer aborted the association{detail}"))
        self._wake_all()

    def _protocol_abort(self, error: RemoteProtocolError) -> None:
        """We (this end) abort because the peer broke the protocol."""
        self._break(error)
        self._peer._aborted_by_peer("")

    def lose(self, reason: str = "peer unreachable") -> None:
        """Fault injection: lose the association, as a retransmission limit reached on
        a dead network would. Both ends get :class:`~trio_sctls.AssociationLostError`
        (after what was already delivered)."""
        for end in (self, self._peer):
            end._break(AssociationLostError(f"the association was lost: {reason}"))
        self._wake_all()

    # -- sending ----------------------------------------------------------------------------

    async def _send(
        self, data: bytes | bytearray | memoryview, stream: int, ppid: int, unordered: bool
    ) -> None:
        message = Message(bytes(data), stream, ppid, unordered)
        await trio.lowlevel.checkpoint_if_cancelled()
        self._check_status()
        peer_inbox = self._peer._inbox
        while not peer_inbox.has_room(len(message.data)):
            await peer_inbox.drained.park()
            self._check_status()
        self._deliver(message)
        await trio.lowlevel.cancel_shielded_checkpoint()

    def _send_nowait(
        self, data: bytes | bytearray | memoryview, stream: int, ppid: int, unordered: bool = False
    ) -> None:
        """Deliver one message (arguments valid) now, without waiting or a checkpoint,
        or raise :class:`trio.WouldBlock` where :meth:`_send` would wait: how the
        association hands over its handshake flights (``trio_sctls._pipe``)."""
        self._check_status()
        if not self._peer._inbox.has_room(len(data)):
            raise trio.WouldBlock
        self._deliver(Message(bytes(data), stream, ppid, unordered))

    def _deliver(self, message: Message) -> None:
        peer = self._peer
        if len(message.data) > peer._max_message_size:
            # It is sent; the peer's stack refuses it and aborts, as SCTP would.
            peer._protocol_abort(
                RemoteProtocolError(
                    f"inbound message of {len(message.data)} bytes exceeds "
                    f"max_message_size ({peer._max_message_size}); association aborted",
                    stream=message.stream,
                )
            )
        else:
            delay = self._delay(message.stream) if self._delay is not None else 0.0
            keys = self._auth_keys
            peer._inbox.put(message, delay, keys.sign() if keys is not None else None)

    async def _reset(self, stream: int) -> bool:
        await trio.lowlevel.checkpoint()
        self._check_status()
        self._peer._inbox.put_reset(stream)
        return True

    async def _wait_sender_dry(self) -> None:
        # Delivered is acknowledged here: only messages still held back by a delay
        # are in flight.
        await trio.lowlevel.checkpoint_if_cancelled()
        peer_inbox = self._peer._inbox
        while True:
            self._check_not_over()
            in_flight = max((due for due, *_ in peer_inbox.heap), default=-math.inf)
            if in_flight <= trio.current_time():
                break
            with trio.move_on_at(in_flight):
                await peer_inbox.drained.park()  # woken early by an abort or close
        await trio.lowlevel.cancel_shielded_checkpoint()

    # -- receiving --------------------------------------------------------------------------

    def _receive_nowait(self) -> Received:
        item = self._inbox.pop_due(self._auth_keys)
        if item is None:
            # Nothing due; the end of the association is left to receive().
            raise trio.WouldBlock
        return item

    async def _receive(self) -> Received:
        await trio.lowlevel.checkpoint_if_cancelled()
        inbox = self._inbox
        while True:
            if self._state is TransportState.CLOSED:
                self._end_of_receive()
            # As in a kernel, what arrived before an ABORT can still be read; what is
            # still in flight (delayed) dies with the association.
            item = inbox.pop_due(self._auth_keys)
            if item is not None:
                await trio.lowlevel.cancel_shielded_checkpoint()
                return item
            broken = self._state is TransportState.BROKEN
            if inbox.heap and not broken:
                with trio.move_on_at(inbox.heap[0][0]):
                    await inbox.arrived.park()
                continue
            if broken or inbox.shutdown:
                await trio.lowlevel.cancel_shielded_checkpoint()
                if not broken and not inbox.shutdown_reported:
                    inbox.shutdown_reported = True
                    return ShutdownReceived()
                self._end_of_receive()
            await inbox.arrived.park()

    # -- closing ----------------------------------------------------------------------------

    async def _close(self, previous: TransportState) -> None:
        if previous is not TransportState.BROKEN:
            # SHUTDOWN: what we queued is still delivered; the peer may send nothing
            # new. Our unread inbound data is dropped, as close() does in a kernel.
            self._peer._inbox.shutdown = True
            self._peer._peer_shut_down()
        self._wake_all()
        await trio.lowlevel.checkpoint()

    def _abort(self, reason: str) -> None:
        self._peer._aborted_by_peer(reason)
        self._wake_all()


def memory_pair(
    *,
    client_outbound: int = 10,
    client_max_inbound: int = 10,
    server_outbound: int = 10,
    server_max_inbound: int = 10,
    client_delay: StreamDelay | None = None,
    server_delay: StreamDelay | None = None,
    window: int = DEFAULT_WINDOW,
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    server_max_message_size: int | None = None,
    client_address: tuple[str, int] = ("memory", 1),
    server_address: tuple[str, int] = ("memory", 2),
    auth: bool = False,
) -> tuple[MemoryTransport, MemoryTransport]:
    """Create a connected ``(client, server)`` pair, with stream counts negotiated as
    SCTP's INIT/INIT-ACK would (RFC 9260 section 5.1.1).

    Args:
        client_outbound: streams the client asks for.
        client_max_inbound: the most streams the client accepts from the server.
        server_outbound: streams the server offers.
        server_max_inbound: the most streams the server accepts from the client.
        client_delay: seconds to hold back each message the client sends, by stream.
        server_delay: the same for the server's messages.
        window: unread bytes each end may hold before its peer's sends wait.
        max_message_size: the largest message the client accepts (and the server too,
            unless ``server_max_message_size`` is given).
        server_max_message_size: the largest message the server accepts.
        client_address: the address reported as the client's.
        server_address: the address reported as the server's.
        auth: both ends negotiated SCTP-AUTH (RFC 4895): each gets a key table.
    """
    server_limit = server_max_message_size or max_message_size
    return _pair(
        _End(client_outbound, client_max_inbound, max_message_size, client_delay, client_address),
        _End(server_outbound, server_max_inbound, server_limit, server_delay, server_address),
        window,
        auth,
    )


def _pair(
    client: _End, server: _End, window: int, auth: bool
) -> tuple[MemoryTransport, MemoryTransport]:
    """The two transports of a new association between ``client`` and ``server``."""
    client_end = MemoryTransport(_Inbox(window), client, server, auth=auth)
    server_end = MemoryTransport(_Inbox(window), server, client, auth=auth)
    client_end._peer, server_end._peer = server_end, client_end
    return client_end, server_end


_listeners: dict[int, MemoryListener] = {}
_next_port = itertools.count(49152)
_next_client_port = itertools.count(32768)


@final
class MemoryListener(MessageListener):
    """Accepts in-process associations on a port of the process-wide memory registry."""

    kind = "memory"

    def __init__(self, port: int, end: _End, window: int, *, auth: bool = False) -> None:
        self._port = port
        self.auth = auth
        #: The server's side of each association it accepts.
        self.end = end
        self.window = window
        self._send, self._receive = trio.open_memory_channel[MemoryTransport](math.inf)

    @property
    def port(self) -> int:
        return self._port

    def _deliver(self, transport: MemoryTransport) -> None:
        self._send.send_nowait(transport)

    if TYPE_CHECKING:

        async def accept(self) -> MemoryTransport:
            """The next association (see :meth:`MessageListener.accept`)."""

    async def _accept(self) -> MemoryTransport:
        try:
            return await self._receive.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            raise trio.ClosedResourceError("this memory listener was closed") from None

    def _close(self) -> None:
        if _listeners.get(self._port) is self:
            del _listeners[self._port]
        # Associations nobody accepted are aborted, as a closing kernel listener aborts
        # its backlog.
        while True:
            try:
                self._receive.receive_nowait().abort()
            except (trio.WouldBlock, trio.EndOfChannel):
                break
        self._send.close()


async def listen_memory(
    port: int = 0,
    *,
    outbound_streams: int = 10,
    max_inbound_streams: int = 10,
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    delay: StreamDelay | None = None,
    window: int = DEFAULT_WINDOW,
    auth: bool = False,
) -> MemoryListener:
    """Listen on ``port`` (0 picks a free one) of the process-wide memory registry;
    with ``auth``, only associations that negotiate SCTP-AUTH are accepted.

    Raises:
        OSError: ``EADDRINUSE`` if the port is taken.
    """
    await trio.lowlevel.checkpoint()
    if port == 0:
        port = next(p for p in _next_port if p not in _listeners)
    if port in _listeners:
        import errno

        raise OSError(errno.EADDRINUSE, f"memory port {port} is already in use")
    end = _End(outbound_streams, max_inbound_streams, max_message_size, delay, ("memory", port))
    listener = MemoryListener(port, end, window, auth=auth)
    _listeners[port] = listener
    return listener


async def connect_memory(
    port: int,
    *,
    outbound_streams: int = 10,
    max_inbound_streams: int = 10,
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    delay: StreamDelay | None = None,
    auth: bool = False,
) -> MemoryTransport:
    """Connect to a :func:`listen_memory` listener in this process; with ``auth``,
    negotiate SCTP-AUTH.

    SCTP-AUTH is on when both ends ask for it. An end that asked for it refuses a peer
    without it, as RFC 4895 section 6.2 lets a receiver that requires authenticated
    chunks do: a client gets :class:`ConnectionRefusedError`; a listener aborts the
    association (the client gets it aborted).

    Raises:
        ConnectionRefusedError: nothing listens on ``port``, or the listener does not
            support SCTP-AUTH and ``auth`` was asked for.
    """
    await trio.lowlevel.checkpoint()
    listener = _listeners.get(port)
    if listener is None:
        raise ConnectionRefusedError(f"nothing listens on memory port {port}")
    if auth and not listener.auth:
        raise ConnectionRefusedError(
            f"the peer on memory port {port} does not support SCTP-AUTH (RFC 4895)"
        )
    address = ("memory", next(_next_client_port))
    client_end = _End(outbound_streams, max_inbound_streams, max_message_size, delay, address)
    client, server = _pair(client_end, listener.end, listener.window, auth)
    if listener.auth and not auth:
        server.abort("this endpoint requires SCTP-AUTH (RFC 4895)")
        return client
    listener._deliver(server)
    return client


def open_client(
    hosts: tuple[str, ...] | None, port: int, options: TransportOptions
) -> AbstractAsyncContextManager[MemoryTransport]:
    """Connect to a memory listener of this process (``hosts`` is ignored) and yield the
    association; whatever is still open on exit is aborted.

    Raises:
        ConnectionRefusedError: nothing listens on ``port``.
    """
    del hosts
    return aborted_on_exit(connect_memory(port, auth=options.auth, **stream_arguments(options)))


def open_server(
    port: int, hosts: tuple[str, ...] | None, options: TransportOptions
) -> AbstractAsyncContextManager[MemoryListener]:
    """Listen on memory ``port`` (``hosts`` is ignored) and yield the listener; it is
    closed on exit (associations accepted from it live on: nothing runs for them).

    Raises:
        OSError: ``EADDRINUSE`` if the port is taken.
    """
    del hosts
    return closed_on_exit(listen_memory(port, auth=options.auth, **stream_arguments(options)))
