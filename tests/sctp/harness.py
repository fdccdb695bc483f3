"""A simulated network for sans-IO SCTP tests: two nodes, a clock, seeded faults.

Nothing sleeps: the clock jumps straight to the next datagram delivery or the next
timer deadline. Faults (loss, duplication, reordering, delay) come from a seeded
``random.Random``, and ``hook`` lets a test drop or rewrite individual datagrams.
``path_mtu`` makes the link a path of that MTU: larger datagrams vanish (a black hole,
no ICMP), except those the core marks :class:`Fragmentable`, which IP would fragment
and reassemble.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from trio_sctls.sctp import (
    Association,
    Endpoint,
    Event,
    Fragmentable,
    MessageReceived,
    SCTPConfig,
)
from trio_sctls.sctp._chunks import DataChunk


class Node:
    """One side of the simulated link: an Association, or an Endpoint with one peer."""

    def __init__(self, inner: Association | Endpoint, peer_addr: object = "peer") -> None:
        self.inner = inner
        self.peer_addr = peer_addr
        self.events: list[Event] = []
        #: The association behind an Endpoint, once it accepted or connected one.
        self.endpoint_assocs: list[Association] = []

    @property
    def assoc(self) -> Association:
        """The association (for an Endpoint node: the latest one)."""
        if isinstance(self.inner, Association):
            return self.inner
        return self.endpoint_assocs[-1]

    def receive(self, data: bytes, now: float) -> None:
        if isinstance(self.inner, Association):
            self.inner.receive_datagram(data, now)
        else:
            self.inner.receive_datagram(data, self.peer_addr, now)

    def outgoing(self, now: float) -> list[bytes]:
        if isinstance(self.inner, Association):
            return self.inner.datagrams_to_send(now)
        return [d for d, _addr in self.inner.datagrams_to_send(now)]

    def drain_events(self) -> None:
        if isinstance(self.inner, Association):
            while (ev := self.inner.next_event()) is not None:
                self.events.append(ev)
        else:
            while (pair := self.inner.next_event()) is not None:
                assoc, ev = pair
                if assoc not in self.endpoint_assocs:
                    self.endpoint_assocs.append(assoc)
                self.events.append(ev)

    def deadline(self) -> float | None:
        return self.inner.timer_deadline()

    def handle_timer(self, now: float) -> None:
        self.inner.handle_timer(now)

    def messages(self, stream: int | None = None) -> list[bytes]:
        """Payloads received so far (on ``stream``, or all)."""
        return [
            e.data
            for e in self.events
            if isinstance(e, MessageReceived) and (stream is None or e.stream == stream)
        ]

    def of_type(self, cls: type) -> list[Event]:
        return [e for e in self.events if isinstance(e, cls)]


#: hook(source_index, datagram, now) -> the datagrams to put on the wire instead.
Hook = Callable[[int, bytes, float], list[bytes]]


@dataclass
class Net:
    """Two nodes and the wire between them."""

    a: Node
    b: Node
    seed: int = 0
    delay: float = 0.01
    jitter: float = 0.0
    loss: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0
    hook: Hook | None = None
    #: The path MTU (IP level), or None for no limit; ``ip_overhead`` is what IP and UDP
    #: add to a datagram (48 for IPv6, the core's default ``ip_header_size`` of 40 + 8).
    path_mtu: int | None = None
    ip_overhead: int = 48
    #: Datagrams the path MTU swallowed.
    too_big: int = 0
    now: float = 0.0
    sent: list[int] = field(default_factory=lambda: [0, 0])
    _queue: list[tuple[float, int, int, bytes]] = field(default_factory=list)
    _seq: int = 0

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    @property
    def nodes(self) -> tuple[Node, Node]:
        return self.a, self.b

    def pump(self) -> None:
        """Collect every node's datagrams and events."""
        for i, node in enumerate(self.nodes):
            for d in node.outgoing(self.now):
                self.sent[i] += 1
                for wire in self.hook(i, d, self.now) if self.hook else [d]:
                    self._transmit(1 - i, wire)
            node.drain_events()

    def _transmit(self, dst: int, data: bytes) -> None:
        mtu = self.path_mtu
        if (
            mtu is not None
            and len(data) + self.ip_overhead > mtu
            and not isinstance(data, Fragmentable)
        ):
            self.too_big += 1
            return
        rng = self.rng
        if self.loss and rng.random() < self.loss:
            return
        copies = 2 if self.duplicate and rng.random() < self.duplicate else 1
        for _ in range(copies):
            t = self.now + self.delay + (rng.random() * self.jitter if self.jitter else 0.0)
            if self.reorder and rng.random() < self.reorder:
                t += self.delay * (1 + 3 * rng.random())
            self._seq += 1
            heapq.heappush(self._queue, (t, self._seq, dst, data))

    def inject(self, dst: int, data: bytes) -> None:
        """Deliver ``data`` to node ``dst`` after the link delay."""
        self._seq += 1
        heapq.heappush(self._queue, (self.now + self.delay, self._seq, dst, data))

    def step(self, limit: float) -> bool:
        """Advance to the next delivery or deadline (not past ``limit``)."""
        self.pump()
        times = [self._queue[0][0]] if self._queue else []
        times += [d for n in self.nodes if (d := n.deadline()) is not None]
        if not times:
            return False
        t = min(times)
        if t > limit:
            self.now = limit
            return False
        self.now = max(self.now, t)
        while self._queue and self._queue[0][0] <= self.now:
            _, _, dst, data = heapq.heappop(self._queue)
            self.nodes[dst].receive(data, self.now)
            self.pump()  # as a driver does: answer each datagram before the next
        for n in self.nodes:
            d = n.deadline()
            if d is not None and d <= self.now:
                n.handle_timer(self.now)
        self.pump()
        return True

    def run_until(self, predicate: Callable[[], bool], timeout: float = 60.0) -> bool:
        """Step until ``predicate()`` holds; False if ``timeout`` simulated seconds pass."""
        limit = self.now + timeout
        while not predicate():
            if not self.step(limit) and (self.now >= limit or not self._queue):
                self.pump()
                return predicate()
        return True

    def run_for(self, seconds: float) -> None:
        """Let ``seconds`` of simulated time pass."""
        limit = self.now + seconds
        while self.step(limit):
            pass
        self.now = limit
        self.pump()


def fast_config(**overrides: object) -> SCTPConfig:
    """A config with a lower RTO.Min (still above the 200 ms delayed SACK), no heartbeats."""
    options: dict[str, object] = {"rto_min": 0.25, "rto_initial": 0.5, "heartbeat_interval": None}
    options.update(overrides)
    return SCTPConfig(**options)  # type: ignore[arg-type]


def pair(
    config: SCTPConfig | None = None,
    server_config: SCTPConfig | None = None,
    *,
    endpoint: bool = False,
    seed: int = 0,
    **net_options: object,
) -> Net:
    """A client Association and a server (a listening Association, or an Endpoint)."""
    config = config or fast_config()
    server_config = server_config or config
    rng = random.Random(seed)
    client = Association(config, local_port=5000, remote_port=9899, rng=random.Random(rng.random()))
    server: Association | Endpoint
    if endpoint:
        server = Endpoint(server_config, local_port=9899, rng=random.Random(rng.random()))
    else:
        server = Association(
            server_config, local_port=9899, remote_port=5000, rng=random.Random(rng.random())
        )
    return Net(Node(client), Node(server), seed=seed, **net_options)  # type: ignore[arg-type]


def connected(net: Net) -> Net:
    """Run the handshake to completion."""
    net.a.assoc.connect(net.now)
    assert net.run_until(lambda: net.a.assoc.established and _server_up(net), 600)
    return net


def _server_up(net: Net) -> bool:
    if isinstance(net.b.inner, Association):
        return net.b.inner.established
    return bool(net.b.endpoint_assocs) and net.b.assoc.established


def chunks_of(datagram: bytes) -> list[object]:
    """The chunks of a datagram (for hooks that look at what goes by)."""
    from trio_sctls.sctp import Packet

    return list(Packet.parse(datagram).chunks)


def data_chunks(datagram: bytes) -> list[DataChunk]:
    """The DATA chunks of a datagram."""
    return [c for c in chunks_of(datagram) if isinstance(c, DataChunk)]


def tap(sink: Callable[[int, bytes, float], object]) -> Hook:
    """A hook that shows every datagram to ``sink`` and lets it through."""

    def hook(i: int, d: bytes, now: float) -> list[bytes]:
        sink(i, d, now)
        return [d]

    return hook


def lose_first_data() -> Hook:
    """A hook that drops the first datagram from ``a`` carrying DATA, once."""
    dropped = False

    def hook(i: int, d: bytes, now: float) -> list[bytes]:
        nonlocal dropped
        if i == 0 and not dropped and data_chunks(d):
            dropped = True
            return []
        return [d]

    return hook
