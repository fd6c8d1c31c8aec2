"""The payloads waiting for a free slot: highest priority first, then first come."""

from __future__ import annotations

import heapq
import itertools
from typing import Generic, TypeVar

T = TypeVar("T")

# (-priority, arrival number, payload id): the smallest tuple starts next.
_Key = tuple[int, int, str]


class PendingQueue(Generic[T]):
    """A priority queue of pending payloads, each with an item, that can drop one from its middle.

    Dropped entries stay in the heap, marked dead, and are skipped when they surface; so
    `remove` is O(1) and `pop` amortised O(log n).
    """

    def __init__(self) -> None:
        self._heap: list[_Key] = []
        self._live: dict[str, tuple[_Key, T]] = {}
        self._arrivals = itertools.count()

    def __len__(self) -> int:
        return len(self._live)

    def __contains__(self, payload_id: str) -> bool:
        return payload_id in self._live

    def push(self, payload_id: str, priority: int, item: T) -> None:
        key = (-priority, next(self._arrivals), payload_id)
        heapq.heappush(self._heap, key)
        self._live[payload_id] = (key, item)

    def pop(self) -> T | None:
        """The next payload's item, or None when none waits."""
        while self._heap:
            key = heapq.heappop(self._heap)
            entry = self._live.get(key[2])
            if entry is not None and entry[0] == key:
                del self._live[key[2]]
                return entry[1]
        return None

    def remove(self, payload_id: str) -> T | None:
        """Drop a payload from the queue: its item, or None when it was not waiting."""
        entry = self._live.pop(payload_id, None)
        if entry is None:
            return None
        if len(self._heap) > 2 * len(self._live) + 64:
            self._compact()
        return entry[1]

    def position(self, payload_id: str) -> int | None:
        """1 for the next to start; None when not waiting. O(n)."""
        entry = self._live.get(payload_id)
        if entry is None:
            return None
        key = entry[0]
        return 1 + sum(1 for other, _ in self._live.values() if other < key)

    def positions(self) -> dict[str, int]:
        """Every waiting payload's position. O(n log n)."""
        ordered = sorted(key for key, _ in self._live.values())
        return {key[2]: n for n, key in enumerate(ordered, 1)}

    def _compact(self) -> None:
        self._heap = [key for key, _ in self._live.values()]
        heapq.heapify(self._heap)
