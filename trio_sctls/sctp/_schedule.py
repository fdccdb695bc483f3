"""The earliest of many deadlines: a heap with lazy invalidation.

An endpoint with thousands of associations (and a UDP driver with thousands of
endpoints) must find the next timer without visiting every association. Each key has at
most one live deadline; changing it pushes a new heap entry and leaves the old one in
place, to be skipped when it reaches the top (an entry is live while its sequence number
is the key's current one). Deadlines move often (every packet sent re-arms the
heartbeat), so stale entries are swept out whenever they outnumber the live ones: the
heap stays within a constant factor of the number of keys, and each update costs
O(log n) amortized.
"""

from __future__ import annotations

import heapq
from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)

#: Stale entries tolerated beyond the live ones before the heap is rebuilt.
_SLACK = 64


class Deadlines(Generic[K]):
    """A deadline per key (``None``: no deadline); the earliest one, and the keys due."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, K]] = []
        self._live: dict[K, tuple[float, int]] = {}
        self._seq = 0

    def __len__(self) -> int:
        return len(self._live)

    def __contains__(self, key: object) -> bool:
        return key in self._live

    def get(self, key: K) -> float | None:
        """``key``'s deadline, or ``None``."""
        entry = self._live.get(key)
        return entry[0] if entry is not None else None

    def set(self, key: K, deadline: float | None) -> None:
        """Give ``key`` this deadline (``None`` removes it)."""
        entry = self._live.get(key)
        if deadline is None:
            if entry is not None:
                del self._live[key]
            return
        if entry is not None and entry[0] == deadline:
            return
        self._seq += 1
        self._live[key] = (deadline, self._seq)
        heapq.heappush(self._heap, (deadline, self._seq, key))
        if len(self._heap) > 2 * len(self._live) + _SLACK:
            self._compact()

    def discard(self, key: K) -> None:
        """Forget ``key`` (its heap entries become stale)."""
        self._live.pop(key, None)

    def earliest(self) -> float | None:
        """The earliest deadline of any key, or ``None``."""
        heap, live = self._heap, self._live
        while heap:
            deadline, seq, key = heap[0]
            entry = live.get(key)
            if entry is not None and entry[1] == seq:
                return deadline
            heapq.heappop(heap)
        return None

    def pop_due(self, now: float) -> list[K]:
        """Remove and return every key whose deadline is ``now`` or earlier, earliest
        first; their deadlines are gone until set again."""
        heap, live = self._heap, self._live
        due: list[K] = []
        while heap and heap[0][0] <= now:
            _deadline, seq, key = heapq.heappop(heap)
            entry = live.get(key)
            if entry is not None and entry[1] == seq:
                del live[key]
                due.append(key)
        return due

    def _compact(self) -> None:
        self._heap = [(deadline, seq, key) for key, (deadline, seq) in self._live.items()]
        heapq.heapify(self._heap)
