"""One throughput transfer: a client pushes a number of bytes split evenly over the
channels of a link, concurrently, and the clock stops when the server has read them all.

When the server runs in the same process (loopback), its side of each channel is a
:class:`Sink` that the client's task watches directly, so the connection carries
nothing but the data. When it runs in another process (the veth pair), each channel's
share is announced in a :data:`HEADER` and acknowledged with :data:`DONE`
(:func:`answer_transfers` is the server's side).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import trio

#: Remote transfers: each channel's share is announced in this many bytes (big-endian).
HEADER = 8
#: ... and acknowledged with this byte once the server has read all of it.
DONE = b"\x01"


class Sink:
    """The server side of one channel, in this process: counts what arrives and says when
    a transfer's share is in. The client learns it without any answer travelling back,
    so the connection carries nothing but the data."""

    def __init__(self) -> None:
        self.expected = 0
        self.got = 0
        self.done = trio.Event()

    def expect(self, nbytes: int) -> None:
        """Start a transfer of ``nbytes`` (before any of it is sent)."""
        if self.got != self.expected:
            raise RuntimeError(f"read {self.got} bytes of a {self.expected}-byte transfer")
        self.expected, self.got, self.done = nbytes, 0, trio.Event()

    async def drain(self, stream: trio.abc.Stream) -> None:
        """Read ``stream`` until it ends."""
        while data := await stream.receive_some():
            self.got += len(data)
            if self.got >= self.expected:
                self.done.set()


async def answer_transfers(stream: trio.abc.Stream) -> None:
    """The server side of one channel in another process: read a share's
    :data:`HEADER`, then that many bytes, then answer :data:`DONE`; until the stream
    ends. The client sends nothing more before the answer, so no read mixes two
    transfers."""
    buffer = bytearray()
    while True:
        while len(buffer) < HEADER:
            if not (data := await stream.receive_some()):
                return
            buffer += data
        remaining = int.from_bytes(buffer[:HEADER], "big") - (len(buffer) - HEADER)
        buffer.clear()
        while remaining > 0:
            if not (data := await stream.receive_some()):
                return
            remaining -= len(data)
        if remaining < 0:
            raise RuntimeError(f"{-remaining} bytes more than announced")
        await stream.send_all(DONE)


@dataclass
class Link:
    """The client's write side and, when the server runs in this process, its sinks
    channel by channel (``None``: the server answers each share, see
    :func:`answer_transfers`)."""

    streams: Sequence[trio.abc.Stream]
    sinks: Sequence[Sink] | None


async def _send_share(stream: trio.abc.Stream, nbytes: int, message: int, remote: bool) -> None:
    """Client side of a channel for one transfer."""
    block = b"x" * message
    full, rest = divmod(nbytes, message)
    send_all = stream.send_all
    if remote:
        await send_all(nbytes.to_bytes(HEADER, "big"))
    for _ in range(full):
        await send_all(block)
    if rest:
        await send_all(block[:rest])
    if remote and await stream.receive_some(len(DONE)) != DONE:
        raise RuntimeError("the server did not acknowledge the transfer")


async def transfer(link: Link, nbytes: int, message: int) -> float:
    """Seconds to push ``nbytes`` split evenly over the link's channels, concurrently,
    until the server side has read it all."""
    share = nbytes // len(link.streams)
    for sink in link.sinks or ():
        sink.expect(share)
    started = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for stream in link.streams:
            nursery.start_soon(_send_share, stream, share, message, link.sinks is None)
        for sink in link.sinks or ():
            await sink.done.wait()
    return time.perf_counter() - started
