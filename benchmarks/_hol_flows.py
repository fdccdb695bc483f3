"""The head-of-line benchmark's workload: request/response flows, and the connections
that carry them.

A request or response is a fixed-size frame starting with its flow id and sequence
number (:func:`frame`). The client side of a case is a :class:`Client` (send a request
on a flow, read responses into the case's :class:`Book`); the server side answers every
request with a frame of the same size on the same flow. The connections are async
context managers yielding a connected :class:`Client`: over trio-sctls (TLS channels,
or plain SCTP messages), optionally through the seeded impaired relay, or over TCP, with
and without TLS. Which case uses which is decided in :mod:`benchmarks.hol`.
"""

from __future__ import annotations

import math
import ssl
import struct
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager, suppress
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import trio

import trio_sctls
from trio_sctls.impaired import Faults, impaired_link

from ._loopback import (
    LOOPBACK,
    Address,
    connect_association,
    connect_sctp,
    connect_tls_over_tcp,
    serving_associations,
    serving_sctp,
    serving_tls_over_tcp,
)

#: Flow id and sequence number at the start of every request and response.
HEADER = struct.Struct("!HI")
#: What each way of carrying the flows is called: (place, layer, variant) -> label.
LABELS = {
    ("vm", "tls", "multi"): "16 TLS channels, kernel SCTP",
    ("vm", "tls", "single"): "one TLS/TCP connection",
    ("vm", "bare", "multi"): "16 streams, bare kernel SCTP",
    ("vm", "bare", "single"): "one bare TCP connection",
    ("host", "tls", "multi"): "16 TLS channels, SCTP/UDP",
    ("host", "tls", "single"): "one TLS channel on one stream, SCTP/UDP",
    ("host", "bare", "multi"): "16 streams, bare SCTP/UDP",
    ("host", "bare", "single"): "one stream, bare SCTP/UDP",
}


# -- the flows ------------------------------------------------------------------------


def frame(flow: int, seq: int, size: int) -> bytes:
    """One request or response: flow id, sequence number, padding to ``size``."""
    return HEADER.pack(flow, seq) + bytes(size - HEADER.size)


class Book:
    """The client's record of one case: when each request was due, each latency."""

    def __init__(self, flows: int) -> None:
        self.due: dict[tuple[int, int], float] = {}
        self.latencies: list[list[float]] = [[] for _ in range(flows)]
        #: (due time, latency) of every measured message, for the bootstrap's blocks
        self.timeline: list[tuple[float, float]] = []
        self.start = math.inf  # measured window: requests due in [start, stop)
        self.stop = math.inf
        self.senders = 0
        #: set once every sender has stopped and every request has been answered
        self.quiet = trio.Event()

    def answered(self, response: bytes) -> None:
        """Record a response: its request's latency, if the request was measured."""
        now = trio.current_time()
        flow, seq = HEADER.unpack_from(response)
        due = self.due.pop((flow, seq), None)
        if due is not None and self.start <= due < self.stop:
            self.latencies[flow].append(now - due)
            self.timeline.append((due, now - due))
        self.check()

    def check(self) -> None:
        """Set :attr:`quiet` if nothing is left to send or to wait for."""
        if not self.senders and not self.due:
            self.quiet.set()

    def unanswered(self) -> int:
        """How many measured requests are still waiting for their response."""
        return sum(1 for due in self.due.values() if self.start <= due < self.stop)


class Client:
    """How a case's client sends requests and reads responses."""

    async def send(self, flow: int, data: bytes) -> None:
        """Send one request on ``flow``."""
        raise NotImplementedError

    async def read(self, book: Book) -> None:
        """Read responses into ``book`` until the peer closes or we are cancelled."""
        raise NotImplementedError


async def read_frames(
    stream: trio.abc.ReceiveStream, size: int, each: Callable[[bytes], Awaitable[None] | None]
) -> None:
    """Call ``each(frame)`` for every ``size``-byte frame from ``stream`` until it ends."""
    buffer = bytearray()
    while True:
        try:
            data = await stream.receive_some()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return
        if not data:
            return
        buffer += data
        whole = len(buffer) - len(buffer) % size
        for offset in range(0, whole, size):
            result = each(bytes(buffer[offset : offset + size]))
            if result is not None:
                await result
        del buffer[:whole]


class StreamsClient(Client):
    """Flows over byte streams: flow *i* on stream *i*, or all flows on one stream
    (requests serialized by a lock, responses told apart by their flow id)."""

    def __init__(self, streams: Sequence[trio.abc.Stream], size: int) -> None:
        self.streams = list(streams)
        self.size = size
        self.locks = [trio.StrictFIFOLock() for _ in self.streams]

    async def send(self, flow: int, data: bytes) -> None:
        index = flow % len(self.streams)
        async with self.locks[index]:
            await self.streams[index].send_all(data)

    async def read(self, book: Book) -> None:
        async with trio.open_nursery() as nursery:
            for stream in self.streams:
                nursery.start_soon(read_frames, stream, self.size, book.answered)


class MessagesClient(Client):
    """Flows over SCTP messages: flow *i* on stream *i* modulo the streams used."""

    def __init__(self, sctp: trio_sctls.MessageTransport, streams: int) -> None:
        self.sctp = sctp
        self.streams = streams

    async def send(self, flow: int, data: bytes) -> None:
        await self.sctp.send_message(data, stream=flow % self.streams)

    async def read(self, book: Book) -> None:
        while True:
            try:
                item = await self.sctp.receive()
            except (trio.EndOfChannel, trio.BrokenResourceError, trio.ClosedResourceError):
                return
            if isinstance(item, trio_sctls.Message):
                book.answered(item.data)


async def answer_stream(stream: trio.abc.Stream, size: int) -> None:
    """Server side of byte-stream flows: answer every request frame, in order."""

    async def answer(request: bytes) -> None:
        await stream.send_all(request[: HEADER.size] + bytes(size - HEADER.size))

    with suppress(trio.BrokenResourceError, trio.ClosedResourceError):
        await read_frames(stream, size, answer)


async def answer_messages(sctp: trio_sctls.MessageTransport) -> None:
    """Server side of message flows: answer every request on its own stream."""
    while True:
        try:
            item = await sctp.receive()
        except (trio.EndOfChannel, trio.BrokenResourceError, trio.ClosedResourceError):
            return
        if isinstance(item, trio_sctls.Message):
            data = item.data
            await sctp.send_message(
                data[: HEADER.size] + bytes(len(data) - HEADER.size), stream=item.stream
            )


# -- the connections ------------------------------------------------------------------


async def handshake_all(channels: Sequence[trio_sctls.Channel]) -> None:
    """Shake hands on every channel at once."""
    async with trio.open_nursery() as nursery:
        for channel in channels:
            nursery.start_soon(channel.do_handshake)


@dataclass(frozen=True)
class Where:
    """Where a case's server is and how the client reaches it.

    Attributes:
        server: an address the server already listens on (another process, over a veth
            pair); ``None``: serve here, on loopback, for the case alone.
        host: the server's IP address.
        relay_host: the address the impaired relay binds (the client's own address on
            a real path, so that both ends see a non-loopback peer).
        options: more transport options for both ends (``rto_min``...).
    """

    server: Address | None = None
    host: str = LOOPBACK
    relay_host: str = LOOPBACK
    options: dict[str, Any] = field(default_factory=dict)


HERE = Where()


@asynccontextmanager
async def _relay(
    where: Where, address: Address, faults: Faults | None, seed: int
) -> AsyncIterator[tuple[str, int | None]]:
    """With ``faults``, the seeded impaired relay in front of a udp server: yield the
    host and UDP port the client sends to instead of the server's. Without faults, or
    over kernel SCTP, the client sends to the server directly (port ``None``: its own)."""
    if faults is None or address.udp_port is None:
        yield where.host, None
        return
    async with impaired_link(
        (where.host, address.udp_port), faults=faults, seed=seed, host=where.relay_host
    ) as link:
        yield link.address[0], link.port


@asynccontextmanager
async def _server(
    where: Where, serving: Callable[[], AbstractAsyncContextManager[Address]]
) -> AsyncIterator[Address]:
    """The case's server: ``where.server``, or ``serving()`` here for the case alone."""
    if where.server is not None:
        yield where.server
        return
    async with serving() as address:
        yield address


def answer_channels(size: int) -> Callable[[trio_sctls.SecureAssociation], Awaitable[None]]:
    """Server side of an association's flows of ``size``-byte frames: every channel
    answered (``trio_sctls.serve``'s handler)."""

    async def handler(association: trio_sctls.SecureAssociation) -> None:
        async with trio.open_nursery() as nursery:
            for channel in association.channels:
                nursery.start_soon(answer_stream, channel, size)

    return handler


@asynccontextmanager
async def trio_sctls_tls(
    size: int,
    channels: int,
    transport: str,
    ctx: tuple[ssl.SSLContext, ssl.SSLContext],
    faults: Faults | None,
    seed: int,
    where: Where = HERE,
) -> AsyncIterator[Client]:
    """A trio-sctls association with ``channels`` TLS channels, flows of ``size``-byte
    frames (through the relay with ``faults``, seeded with ``seed``), to the server
    ``where`` says."""
    server_ctx, client_ctx = ctx
    serving = partial(
        serving_associations,
        answer_channels(size),
        server_ctx,
        transport=transport,
        streams=channels,
        **where.options,
    )
    async with (
        _server(where, serving) as address,
        _relay(where, address, faults, seed) as (host, relay_port),
        connect_association(
            address,
            client_ctx,
            transport=transport,
            streams=channels,
            udp_port_to=relay_port,
            host=host,
            session_cache=None,
            **where.options,
        ) as association,
    ):
        if len(association.channels) != channels:
            raise RuntimeError(f"wanted {channels} channels, got {association}")
        await handshake_all(association.channels)
        yield StreamsClient(association.channels, size)


@asynccontextmanager
async def bare_sctp(
    streams: int, transport: str, faults: Faults | None, seed: int, where: Where = HERE
) -> AsyncIterator[Client]:
    """A plain SCTP association with ``streams`` streams, one message per request
    (through the relay with ``faults``, seeded with ``seed``), to the server ``where``
    says."""
    serving = partial(
        serving_sctp, answer_messages, transport=transport, streams=streams, **where.options
    )
    async with (
        _server(where, serving) as address,
        _relay(where, address, faults, seed) as (host, relay_port),
        connect_sctp(
            address,
            transport=transport,
            streams=streams,
            udp_port_to=relay_port,
            host=host,
            **where.options,
        ) as sctp,
    ):
        yield MessagesClient(sctp, streams)


@asynccontextmanager
async def bare_tcp(size: int) -> AsyncIterator[Client]:
    """One plain TCP connection (trio sets TCP_NODELAY), flows of ``size``-byte frames."""

    async def handler(stream: trio.SocketStream) -> None:
        await answer_stream(stream, size)
        await stream.aclose()

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, handler, 0, host=LOOPBACK))
        port = listeners[0].socket.getsockname()[1]
        stream = await trio.open_tcp_stream(LOOPBACK, port)
        try:
            yield StreamsClient([stream], size)
        finally:
            await stream.aclose()
            nursery.cancel_scope.cancel()


@asynccontextmanager
async def tls_over_tcp(
    size: int, ctx: tuple[ssl.SSLContext, ssl.SSLContext]
) -> AsyncIterator[Client]:
    """One TLS/TCP connection, trio's SSLStream on both sides, flows of ``size``-byte
    frames."""
    server_ctx, client_ctx = ctx

    async def handler(stream: trio.SSLStream[trio.SocketStream]) -> None:
        await answer_stream(stream, size)
        with suppress(trio.BrokenResourceError):
            await stream.aclose()

    async with serving_tls_over_tcp(handler, server_ctx) as port:
        stream = await connect_tls_over_tcp(port, client_ctx)
        try:
            yield StreamsClient([stream], size)
        finally:
            with trio.move_on_after(5):
                await stream.aclose()
