"""Many associations on one Endpoint: only the fed ones are visited, and every one of them
still gets its timers (heartbeats, retransmissions) on time. No timing assertions: the
clock is simulated."""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable, Hashable

from hypothesis import given, settings
from hypothesis import strategies as st

from trio_sctls.sctp import (
    Association,
    AssociationLost,
    AssociationUp,
    Deadlines,
    Endpoint,
    Event,
    MessageReceived,
)
from trio_sctls.sctp._chunks import DataChunk, HeartbeatAckChunk, HeartbeatChunk
from trio_sctls.sctp._endpoint import LINGER

from .harness import chunks_of, fast_config

# -- the deadline index -------------------------------------------------------------------

_ops = st.lists(
    st.one_of(
        st.tuples(st.just("set"), st.integers(0, 7), st.none() | st.integers(0, 50)),
        st.tuples(st.just("discard"), st.integers(0, 7), st.none()),
        st.tuples(st.just("pop"), st.integers(0, 50), st.none()),
    ),
    max_size=300,
)


@settings(max_examples=200, deadline=None)
@given(_ops)
def test_deadlines_agree_with_a_plain_dict(ops: list[tuple[str, int, int | None]]) -> None:
    index: Deadlines[int] = Deadlines()
    model: dict[int, float] = {}
    for op, arg, value in ops:
        if op == "set":
            index.set(arg, value)
            if value is None:
                model.pop(arg, None)
            else:
                model[arg] = value
        elif op == "discard":
            index.discard(arg)
            model.pop(arg, None)
        else:
            due = index.pop_due(arg)
            expected = sorted((d, k) for k, d in model.items() if d <= arg)
            assert sorted(due) == sorted(k for _, k in expected)
            assert [model[k] for k in due] == sorted(model[k] for k in due)  # earliest first
            for k in due:
                del model[k]
        assert index.earliest() == (min(model.values()) if model else None)
        assert len(index) == len(model)
        assert all(index.get(k) == d for k, d in model.items())


def test_deadlines_that_keep_moving_do_not_grow_the_heap() -> None:
    index: Deadlines[int] = Deadlines()
    for step in range(100_000):
        index.set(step % 10, float(step))  # a heartbeat re-armed on every packet
    assert len(index) == 10
    assert len(index._heap) <= 2 * 10 + 64 + 1
    assert index.earliest() == 99_990.0


# -- a small network of endpoints -----------------------------------------------------------


class Sim:
    """Endpoints at addresses, a wire with a fixed delay, a simulated clock, and a tap."""

    def __init__(self, endpoints: dict[Hashable, Endpoint], delay: float = 0.01) -> None:
        self.endpoints = endpoints
        self.delay = delay
        self.now = 0.0
        self.black_hole = False
        self.events: list[tuple[Hashable, Association, Event]] = []
        #: (from address, to address, datagram) of everything sent.
        self.sent: list[tuple[Hashable, Hashable, bytes]] = []
        self._wire: list[tuple[float, int, Hashable, Hashable, bytes]] = []
        self._seq = 0

    def flush(self) -> None:
        for here, endpoint in self.endpoints.items():
            for data, there in endpoint.datagrams_to_send(self.now):
                self.sent.append((here, there, data))
                if not self.black_hole:
                    self._seq += 1
                    due = self.now + self.delay
                    heapq.heappush(self._wire, (due, self._seq, here, there, data))
            while (item := endpoint.next_event()) is not None:
                self.events.append((here, *item))

    def run_for(self, seconds: float) -> None:
        limit = self.now + seconds
        while True:
            self.flush()
            times = [self._wire[0][0]] if self._wire else []
            times += [d for e in self.endpoints.values() if (d := e.timer_deadline()) is not None]
            if not times or min(times) > limit:
                self.now = limit
                return
            self.now = max(self.now, min(times))
            while self._wire and self._wire[0][0] <= self.now:
                _, _, there, here, data = heapq.heappop(self._wire)
                self.endpoints[here].receive_datagram(data, there, self.now)
            for endpoint in self.endpoints.values():
                deadline = endpoint.timer_deadline()
                if deadline is not None and deadline <= self.now:
                    endpoint.handle_timer(self.now)


def _star(n: int, **config: object) -> tuple[Sim, Endpoint, Endpoint]:
    """One client endpoint ("c") with ``n`` associations, one to each of ``n`` server
    endpoints, and one server endpoint ("hub") accepting ``n`` associations from ``n``
    client endpoints: many associations on one endpoint, on either side."""
    cfg = fast_config(**config)
    rng = random.Random(5)
    endpoints: dict[Hashable, Endpoint] = {}
    client = Endpoint(cfg, local_port=5000, accept=False, rng=random.Random(rng.random()))
    hub = Endpoint(cfg, local_port=9899, rng=random.Random(rng.random()))
    endpoints["c"] = client
    endpoints["hub"] = hub
    for i in range(n):
        endpoints[f"s{i}"] = Endpoint(cfg, local_port=9899, rng=random.Random(rng.random()))
        leaf = Endpoint(cfg, local_port=5000, accept=False, rng=random.Random(rng.random()))
        endpoints[f"l{i}"] = leaf
    sim = Sim(endpoints)
    for i in range(n):
        client.connect(f"s{i}", sim.now)
        endpoints[f"l{i}"].connect("hub", sim.now)
    sim.run_for(5)
    return sim, client, hub


def _heartbeats(sim: Sim, since: int) -> dict[tuple[Hashable, Hashable], int]:
    counts: dict[tuple[Hashable, Hashable], int] = {}
    for here, there, data in sim.sent[since:]:
        for chunk in chunks_of(data):
            if type(chunk) is HeartbeatChunk:
                counts[(here, there)] = counts.get((here, there), 0) + 1
    return counts


def test_every_association_of_a_busy_endpoint_keeps_its_heartbeats() -> None:
    n = 40
    sim, client, hub = _star(n, heartbeat_interval=3.0)
    assert len(client.associations) == n and len(hub.associations) == n
    assert sum(isinstance(e, AssociationUp) for _, _, e in sim.events) == 4 * n
    mark = len(sim.sent)
    sim.run_for(40)  # idle: only heartbeats run, every 3 s + RTO
    beats = _heartbeats(sim, mark)
    for i in range(n):
        # Each end of each association beat about 40 / 3.25 times.
        for pair in (("c", f"s{i}"), (f"s{i}", "c"), ("hub", f"l{i}"), (f"l{i}", "hub")):
            assert 8 <= beats.get(pair, 0) <= 13, (pair, beats.get(pair))
    acks = sum(
        type(chunk) is HeartbeatAckChunk for _, _, d in sim.sent[mark:] for chunk in chunks_of(d)
    )
    assert acks == sum(beats.values())
    assert all(a.established for a in client.associations + hub.associations)


def test_every_association_of_a_busy_endpoint_notices_a_dead_path() -> None:
    n = 25
    sim, client, hub = _star(n, heartbeat_interval=1.0, max_retransmissions=2)
    sim.black_hole = True
    sim.run_for(60)
    lost = {(where, assoc) for where, assoc, e in sim.events if isinstance(e, AssociationLost)}
    assert len(lost) == 4 * n  # every end of every association, by its own timers
    assert client.associations == [] and hub.associations == []
    assert client.timer_deadline() is None and hub.timer_deadline() is None


def test_a_flush_visits_only_the_associations_that_were_fed() -> None:
    n = 30
    sim, client, _hub = _star(n)
    visited: list[Association] = []

    def counting(assoc: Association) -> Callable[[float], list[bytes]]:
        original = assoc.datagrams_to_send

        def datagrams_to_send(now: float) -> list[bytes]:
            visited.append(assoc)
            return original(now)

        return datagrams_to_send

    for assoc in client.associations:
        assoc.datagrams_to_send = counting(assoc)  # type: ignore[method-assign,assignment]
    woken: list[Endpoint] = []
    client.wakeup = woken.append
    assert client.datagrams_to_send(sim.now) == [] and visited == []
    # The application feeds one association directly, not through the endpoint.
    chosen = client.associations[7]
    chosen.send(b"only me", stream=1)
    assert woken == [client]
    chosen.send(b"me again", stream=2)
    assert woken == [client]  # once per flush, not per call
    out = client.datagrams_to_send(sim.now)
    assert visited == [chosen]
    assert [addr for _, addr in out] == [client.address_of(chosen)]
    data = [c for d, _ in out for c in chunks_of(d) if isinstance(c, DataChunk)]
    assert [c.user_data for c in data] == [b"only me", b"me again"]
    # Its retransmission timer is now the endpoint's earliest deadline.
    assert client.timer_deadline() == chosen.timer_deadline()
    assert client.timer_deadline() is not None
    sim.run_for(2)
    got = [e.data for where, _, e in sim.events if isinstance(e, MessageReceived)]
    assert got == [b"only me", b"me again"]


def test_a_timer_fires_for_the_right_association_among_many() -> None:
    n = 30
    sim, client, _hub = _star(n)
    sim.black_hole = True  # the DATA below is lost: only T3 can bring it back
    target = client.associations[n // 2]
    mark = len(sim.sent)
    target.send(b"retransmit me", stream=0)
    sim.flush()
    sim.black_hole = False
    sim.run_for(5)
    carrying_data = [
        there
        for here, there, d in sim.sent[mark:]
        if here == "c" and any(isinstance(c, DataChunk) for c in chunks_of(d))
    ]
    assert len(carrying_data) >= 2  # sent, lost, retransmitted by T3
    assert set(carrying_data) == {client.address_of(target)}
    got = [(where, e.data) for where, _, e in sim.events if isinstance(e, MessageReceived)]
    assert got == [(client.address_of(target), b"retransmit me")]


def test_closed_associations_linger_and_expire_oldest_first() -> None:
    n = 30
    sim, _client, hub = _star(n)
    tags = [a.verification_tag for a in hub.associations]
    for assoc in hub.associations:
        assoc.abort()
    sim.run_for(1)
    assert hub.associations == []
    assert list(hub._linger) == tags  # remembered, in the order they closed
    sim.run_for(LINGER + 1)
    # The next association to close sweeps the expired tags out from the front.
    late = Endpoint(fast_config(), local_port=5001, accept=False, rng=random.Random(99))
    sim.endpoints["late"] = late
    late.connect("hub", sim.now)
    sim.run_for(1)
    (newcomer,) = hub.associations
    newcomer.abort()
    sim.run_for(1)
    assert list(hub._linger) == [newcomer.verification_tag]
