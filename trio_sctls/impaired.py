"""An impaired link for SCTP over UDP: a UDP relay with seeded faults, for tests,
benchmarks and experiments (loss, duplication, reordering, delay).

``async with impaired_link(server_address, ...) as link`` relays between one client and
the server's UDP address: the client sends to ``link.address`` (``remote_udp_port=
link.port``), the server sees the relay as its peer. The relay listens on loopback
unless given a ``host`` (an address of this machine on a real path, so that the client
and the server see a non-loopback peer, as they would across a network). Each direction has its own
``random.Random`` derived from the seed, so the same datagrams meet the same fate on
every run: loss, duplication, reordering (a datagram is held back ``reorder_delay`` so
later ones overtake it) and delay (``delay`` plus up to ``jitter``). Delays are Trio
timers, so under the autojump clock they cost no real time.

``hook(direction, index, datagram)`` runs first for every datagram (``index`` counts
per direction from 0) and may return ``DROP`` or a list of datagrams to pass on instead;
``None`` leaves it to the seeded faults. ``link.inject(direction, datagram)`` sends a
datagram of the test's own making, from the relay's address for that direction, which
the peer takes as coming from the other side.
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
import socket
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Literal

import trio

from trio_sctls._util import unwrap_single_exception

Direction = Literal["to_server", "to_client"]
#: Returned by a hook: drop this datagram.
DROP: Sequence[bytes] = ()
Hook = Callable[[Direction, int, bytes], Sequence[bytes] | None]


@dataclass
class Faults:
    """The seeded faults of one direction (probabilities per datagram, seconds)."""

    loss: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0
    delay: float = 0.0
    jitter: float = 0.0
    reorder_delay: float = 0.02


@dataclass
class Stats:
    """What one direction did."""

    received: int = 0
    forwarded: int = 0
    dropped: int = 0
    duplicated: int = 0
    reordered: int = 0


@dataclass
class _Direction:
    name: Direction
    faults: Faults
    rng: random.Random
    stats: Stats = field(default_factory=Stats)
    queue: list[tuple[float, int, bytes]] = field(default_factory=list)
    count: int = 0


class ImpairedLink:
    """The relay (see the module docstring). Create it with :func:`impaired_link`."""

    def __init__(
        self,
        server: tuple[str, int],
        *,
        to_server: Faults,
        to_client: Faults,
        seed: int,
        hook: Hook | None,
        host: str = "127.0.0.1",
    ) -> None:
        self.server = server
        self.hook = hook
        self._front = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # faces the client
        self._back = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # faces the server
        for sock in (self._front, self._back):
            sock.bind((host, 0))
            sock.setblocking(False)
        self._back.connect(server)
        self.client: tuple[str, int] | None = None
        self._order = itertools.count()
        self._directions = {
            "to_server": _Direction("to_server", to_server, random.Random(f"{seed}/to_server")),
            "to_client": _Direction("to_client", to_client, random.Random(f"{seed}/to_client")),
        }
        self._wakeup = trio.lowlevel.ParkingLot()

    @property
    def address(self) -> tuple[str, int]:
        """Where the client sends (the relay's front UDP address)."""
        host, port = self._front.getsockname()[:2]
        return host, port

    @property
    def port(self) -> int:
        """The UDP port the client sends to."""
        return self.address[1]

    def stats(self, direction: Direction) -> Stats:
        """Counters of one direction."""
        return self._directions[direction].stats

    def inject(self, direction: Direction, datagram: bytes) -> None:
        """Send ``datagram`` as if it came from the other side (no faults applied)."""
        self._emit(direction, datagram)

    def _emit(self, direction: Direction, datagram: bytes) -> None:
        if direction == "to_server":
            self._back.send(datagram)
        elif self.client is not None:
            self._front.sendto(datagram, self.client)

    def _arrive(self, d: _Direction, datagram: bytes, now: float) -> None:
        d.stats.received += 1
        index = d.count
        d.count += 1
        if self.hook is not None:
            verdict = self.hook(d.name, index, datagram)
            if verdict is not None:
                if not verdict:
                    d.stats.dropped += 1
                for item in verdict:
                    self._schedule(d, item, now)
                return
        faults, rng = d.faults, d.rng
        # Draw every number every time, so one fault's setting never shifts another's.
        lost, dup, reorder = rng.random(), rng.random(), rng.random()
        jitter = rng.random() * faults.jitter
        if lost < faults.loss:
            d.stats.dropped += 1
            return
        delay = faults.delay + jitter
        if reorder < faults.reorder:
            d.stats.reordered += 1
            delay += faults.reorder_delay
        self._schedule(d, datagram, now + delay)
        if dup < faults.duplicate:
            d.stats.duplicated += 1
            self._schedule(d, datagram, now + delay + faults.jitter / 2)

    def _schedule(self, d: _Direction, datagram: bytes, due: float) -> None:
        heapq.heappush(d.queue, (due, next(self._order), datagram))
        self._wakeup.unpark_all()

    def _release(self, now: float) -> float:
        """Send what is due; return the next due time."""
        following = math.inf
        for d in self._directions.values():
            while d.queue and d.queue[0][0] <= now:
                _, _, datagram = heapq.heappop(d.queue)
                d.stats.forwarded += 1
                self._emit(d.name, datagram)
            if d.queue:
                following = min(following, d.queue[0][0])
        return following

    async def _pump(self, sock: socket.socket, d: _Direction) -> None:
        while True:
            await trio.lowlevel.wait_readable(sock)
            now = trio.current_time()
            while True:
                try:
                    datagram, address = sock.recvfrom(65536)
                except BlockingIOError:
                    break
                except ConnectionRefusedError:
                    continue  # the server went away; keep relaying the rest
                if d.name == "to_server":
                    self.client = address
                self._arrive(d, datagram, now)
            self._release(now)

    async def _timers(self) -> None:
        while True:
            following = self._release(trio.current_time())
            with trio.move_on_at(following):
                await self._wakeup.park()

    async def run(self) -> None:
        """Relay until cancelled."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._pump, self._front, self._directions["to_server"])
            nursery.start_soon(self._pump, self._back, self._directions["to_client"])
            nursery.start_soon(self._timers)

    def close(self) -> None:
        """Release the sockets."""
        for sock in (self._front, self._back):
            trio.lowlevel.notify_closing(sock)
            sock.close()


@asynccontextmanager
async def impaired_link(
    server: tuple[str, int],
    *,
    faults: Faults | None = None,
    to_server: Faults | None = None,
    to_client: Faults | None = None,
    seed: int = 0,
    hook: Hook | None = None,
    host: str = "127.0.0.1",
) -> AsyncIterator[ImpairedLink]:
    """Relay to ``server`` with seeded faults while the block runs.

    Args:
        server: the server's UDP address.
        faults: the faults of both directions (unless given per direction).
        to_server: the faults from client to server.
        to_client: the faults from server to client.
        seed: makes the faults reproducible.
        hook: see the module docstring.
        host: the IPv4 address the relay binds, both ways (loopback by default).
    """
    both = faults or Faults()
    link = ImpairedLink(
        server,
        to_server=to_server or both,
        to_client=to_client or both,
        seed=seed,
        hook=hook,
        host=host,
    )
    try:
        with unwrap_single_exception():
            async with trio.open_nursery() as nursery:
                nursery.start_soon(link.run)
                yield link
                nursery.cancel_scope.cancel()
    finally:
        link.close()
