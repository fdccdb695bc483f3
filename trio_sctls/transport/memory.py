"""An in-process SCTP association: two :class:`MemoryTransport` ends joined by a link.

For tests and notebooks. It keeps the properties of SCTP that the layers above rely on:

* messages stay whole, ordered per stream, independent across streams;
* stream counts are negotiated like an INIT/INIT-ACK exchange (each side's outbound count
  is capped by the other's maximum inbound count);
* a bounded receive window: a sender waits while the peer holds ``window`` unread bytes,
  as SCTP's rwnd pushes back on a sender whose peer does not read;
* graceful shutdown (queued messages are delivered, then :class:`ShutdownReceived`, then
  :class:`trio.EndOfChannel`) and abort (the peer gets :class:`AssociationAbortedError`).

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
from typing import final

import trio

from .._errors import AssociationAbortedError
from ._base import (
    DEFAULT_MAX_MESSAGE_SIZE,
    MAX_ABORT_REASON,
    Message,
    MessageListener,
    MessageTransport,
    Received,
    ShutdownReceived,
    StreamReset,
    check_send_args,
)

#: Bytes a receiver may hold unread before senders wait; like a default SCTP rwnd.
DEFAULT_WINDOW = 1024 * 1024

StreamDelay = Callable[[int], float]

_sequence = itertools.count()


class _Inbox:
    """One direction of the link: what the receiving end has not read yet."""

    def __init__(self, window: int, max_message_size: int) -> None:
        self.window = window
        # The receiving end's limit on one message.
        self.max_message_size = max_message_size
        self.heap: list[tuple[float, int, Message | StreamReset]] = []
        self.buffered = 0
        self.last_due: dict[int, float] = {}
        # Set when the sending end shut down (graceful) or aborted.
        self.shutdown = False
        self.shutdown_reported = False
        self.aborted = False
        self.abort_reason = ""
        self.arrived = trio.lowlevel.ParkingLot()
        self.drained = trio.lowlevel.ParkingLot()

    def put(self, message: Message, delay: float) -> None:
        now = trio.current_time()
        # Monotonic per stream: a delay holds a stream back but never reorders it.
        due = max(now + delay, self.last_due.get(message.stream, -math.inf))
        if not message.unordered:
            self.last_due[message.stream] = due
        heapq.heappush(self.heap, (due, next(_sequence), message))
        self.buffered += len(message.data)
        self.arrived.unpark_all()

    def put_reset(self, stream: int) -> None:
        # Performed after what is queued on the stream, as RFC 6525 section 5.1.2 asks.
        due = self.last_due.get(stream, trio.current_time())
        heapq.heappush(self.heap, (due, next(_sequence), StreamReset((stream,))))
        self.arrived.unpark_all()

    def has_room(self, size: int) -> bool:
        # A message larger than the whole window still goes through once the peer has
        # read everything, as SCTP lets one message through an empty window.
        return self.buffered == 0 or self.buffered + size <= self.window


def _aborted_by_peer(reason: str) -> AssociationAbortedError:
    detail = f": {reason}" if reason else ""
    return AssociationAbortedError(f"the peer aborted the association{detail}")


@final
class MemoryTransport(MessageTransport):
    """One end of an in-process association. Create pairs with :func:`memory_pair` or
    through :func:`listen_memory` / :func:`connect_memory`."""

    kind = "memory"

    def __init__(
        self,
        *,
        inbox: _Inbox,
        peer_inbox: _Inbox,
        outbound_streams: int,
        inbound_streams: int,
        delay: StreamDelay | None,
        local: tuple[str, int],
        peer: tuple[str, int],
    ) -> None:
        self._inbox = inbox
        self._peer_inbox = peer_inbox
        self._outbound = outbound_streams
        self._inbound = inbound_streams
        self._delay = delay
        self._local = local
        self._peer = peer
        self._closed = False
        self._receiving = False

    @property
    def outbound_streams(self) -> int:
        return self._outbound

    @property
    def inbound_streams(self) -> int:
        return self._inbound

    @property
    def max_message_size(self) -> int:
        return self._inbox.max_message_size

    @property
    def local_addresses(self) -> list[tuple[str, int]]:
        return [self._local]

    @property
    def peer_addresses(self) -> list[tuple[str, int]]:
        return [self._peer]

    def _check_sendable(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError("this transport was closed")
        if self._inbox.aborted:
            raise _aborted_by_peer(self._inbox.abort_reason)
        if self._inbox.shutdown:
            # RFC 9260 section 9.2: after receiving SHUTDOWN, accept no new data from
            # the upper layer.
            raise trio.BrokenResourceError("the peer shut the association down")

    async def send_message(
        self,
        data: bytes | bytearray | memoryview,
        *,
        stream: int,
        ppid: int = 0,
        unordered: bool = False,
    ) -> None:
        check_send_args(self, data, stream, ppid)
        message = Message(bytes(data), stream, ppid, unordered)
        await trio.lowlevel.checkpoint_if_cancelled()
        self._check_sendable()
        while not self._peer_inbox.has_room(len(message.data)):
            await self._peer_inbox.drained.park()
            self._check_sendable()
        if len(message.data) > self._peer_inbox.max_message_size:
            # The peer's SCTP stack would abort on a message beyond its limit; so do we,
            # on both ends, as a real association would.
            self._abort_link()
            raise AssociationAbortedError(
                f"message of {len(message.data)} bytes exceeds the peer's maximum",
                stream=stream,
            )
        delay = self._delay(stream) if self._delay is not None else 0.0
        self._peer_inbox.put(message, delay)
        await trio.lowlevel.cancel_shielded_checkpoint()

    async def receive(self) -> Received:
        if self._receiving:
            raise trio.BusyResourceError("another task is already receiving on this transport")
        self._receiving = True
        try:
            return await self._receive()
        finally:
            self._receiving = False

    def receive_nowait(self) -> Received:
        if self._receiving:
            raise trio.BusyResourceError("another task is already receiving on this transport")
        if self._closed:
            raise trio.ClosedResourceError("this transport was closed")
        inbox = self._inbox
        if inbox.heap and inbox.heap[0][0] <= trio.current_time():
            _, _, message = heapq.heappop(inbox.heap)
            if isinstance(message, Message):
                inbox.buffered -= len(message.data)
                inbox.drained.unpark_all()
            return message
        # Nothing due; the end of the association is left to receive().
        raise trio.WouldBlock

    async def _receive(self) -> Received:
        await trio.lowlevel.checkpoint_if_cancelled()
        inbox = self._inbox
        while True:
            if self._closed:
                raise trio.ClosedResourceError("this transport was closed")
            if inbox.heap:
                due = inbox.heap[0][0]
                # As in a kernel, what arrived before an ABORT can still be read; what
                # is still in flight (delayed) dies with the association.
                if due <= trio.current_time():
                    _, _, message = heapq.heappop(inbox.heap)
                    if isinstance(message, Message):
                        inbox.buffered -= len(message.data)
                        inbox.drained.unpark_all()
                    await trio.lowlevel.cancel_shielded_checkpoint()
                    return message
                if not inbox.aborted:
                    with trio.move_on_at(due):
                        await inbox.arrived.park()
                    continue
            if inbox.aborted:
                raise _aborted_by_peer(inbox.abort_reason)
            if inbox.shutdown:
                if not inbox.shutdown_reported:
                    inbox.shutdown_reported = True
                    await trio.lowlevel.cancel_shielded_checkpoint()
                    return ShutdownReceived()
                await trio.lowlevel.cancel_shielded_checkpoint()
                raise trio.EndOfChannel
            await inbox.arrived.park()

    async def reset_outgoing_stream(self, stream: int) -> bool:
        if not 0 <= stream < self._outbound:
            raise ValueError(f"stream {stream} out of range")
        await trio.lowlevel.checkpoint()
        self._check_sendable()
        self._peer_inbox.put_reset(stream)
        return True

    def _wake_all(self) -> None:
        for inbox in (self._inbox, self._peer_inbox):
            inbox.arrived.unpark_all()
            inbox.drained.unpark_all()

    def _abort_link(self, reason: str = "") -> None:
        self._peer_inbox.aborted = True
        self._peer_inbox.abort_reason = reason[:MAX_ABORT_REASON]
        self._closed = True
        self._wake_all()

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            if not self._inbox.aborted:
                # SHUTDOWN: what we queued is still delivered; the peer may send nothing
                # new. Our unread inbound data is dropped, as close() does in a kernel.
                self._peer_inbox.shutdown = True
                self._inbox.shutdown = True
                self._inbox.shutdown_reported = True
            self._wake_all()
        await trio.lowlevel.checkpoint()

    def abort(self, reason: str = "") -> None:
        if not self._closed:
            self._abort_link(reason)


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
    """
    for name, count in (
        ("client_outbound", client_outbound),
        ("client_max_inbound", client_max_inbound),
        ("server_outbound", server_outbound),
        ("server_max_inbound", server_max_inbound),
    ):
        if not 1 <= count <= 65535:
            raise ValueError(f"{name} must be in 1..65535, not {count}")
    to_server = _Inbox(window, server_max_message_size or max_message_size)
    to_client = _Inbox(window, max_message_size)
    c2s = min(client_outbound, server_max_inbound)
    s2c = min(server_outbound, client_max_inbound)
    client = MemoryTransport(
        inbox=to_client,
        peer_inbox=to_server,
        outbound_streams=c2s,
        inbound_streams=s2c,
        delay=client_delay,
        local=client_address,
        peer=server_address,
    )
    server = MemoryTransport(
        inbox=to_server,
        peer_inbox=to_client,
        outbound_streams=s2c,
        inbound_streams=c2s,
        delay=server_delay,
        local=server_address,
        peer=client_address,
    )
    return client, server


_listeners: dict[int, MemoryListener] = {}
_next_port = itertools.count(49152)
_next_client_port = itertools.count(32768)


@final
class MemoryListener(MessageListener):
    """Accepts in-process associations on a port of the process-wide memory registry."""

    kind = "memory"

    def __init__(
        self,
        port: int,
        *,
        outbound_streams: int,
        max_inbound_streams: int,
        max_message_size: int,
        delay: StreamDelay | None,
        window: int,
    ) -> None:
        self._port = port
        self.outbound_streams = outbound_streams
        self.max_inbound_streams = max_inbound_streams
        self.max_message_size = max_message_size
        self.delay = delay
        self.window = window
        self._send, self._receive = trio.open_memory_channel[MemoryTransport](math.inf)
        self._closed = False

    @property
    def port(self) -> int:
        return self._port

    def _deliver(self, transport: MemoryTransport) -> None:
        self._send.send_nowait(transport)

    async def accept(self) -> MemoryTransport:
        try:
            return await self._receive.receive()
        except trio.EndOfChannel:
            raise trio.ClosedResourceError("this listener was closed") from None

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            if _listeners.get(self._port) is self:
                del _listeners[self._port]
            # Associations nobody accepted are aborted, as a closing kernel listener
            # aborts its backlog.
            while True:
                try:
                    self._receive.receive_nowait().abort()
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
            self._send.close()
        await trio.lowlevel.checkpoint()


async def listen_memory(
    port: int = 0,
    *,
    outbound_streams: int = 10,
    max_inbound_streams: int = 10,
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    delay: StreamDelay | None = None,
    window: int = DEFAULT_WINDOW,
) -> MemoryListener:
    """Listen on ``port`` (0 picks a free one) of the process-wide memory registry.

    Raises:
        OSError: ``EADDRINUSE`` if the port is taken.
    """
    await trio.lowlevel.checkpoint()
    if port == 0:
        port = next(p for p in _next_port if p not in _listeners)
    if port in _listeners:
        import errno

        raise OSError(errno.EADDRINUSE, f"memory port {port} is already in use")
    listener = MemoryListener(
        port,
        outbound_streams=outbound_streams,
        max_inbound_streams=max_inbound_streams,
        max_message_size=max_message_size,
        delay=delay,
        window=window,
    )
    _listeners[port] = listener
    return listener


async def connect_memory(
    port: int,
    *,
    outbound_streams: int = 10,
    max_inbound_streams: int = 10,
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    delay: StreamDelay | None = None,
) -> MemoryTransport:
    """Connect to a :func:`listen_memory` listener in this process.

    Raises:
        ConnectionRefusedError: nothing listens on ``port``.
    """
    await trio.lowlevel.checkpoint()
    listener = _listeners.get(port)
    if listener is None:
        raise ConnectionRefusedError(f"nothing listens on memory port {port}")
    client, server = memory_pair(
        client_outbound=outbound_streams,
        client_max_inbound=max_inbound_streams,
        server_outbound=listener.outbound_streams,
        server_max_inbound=listener.max_inbound_streams,
        client_delay=delay,
        server_delay=listener.delay,
        window=listener.window,
        max_message_size=max_message_size,
        server_max_message_size=listener.max_message_size,
        client_address=("memory", next(_next_client_port)),
        server_address=("memory", port),
    )
    listener._deliver(server)
    return client
