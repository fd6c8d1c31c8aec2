"""Which ended payloads to forget: past `keep_finished` of them, or older than `keep_for`."""

from __future__ import annotations

import collections
import time


class Retention:
    """Ended payload ids in the order they ended, with the time each ended.

    Active payloads are never in here, so they are never evicted.
    """

    def __init__(self, keep: int, keep_for: float | None) -> None:
        self._keep = keep
        self._keep_for = keep_for
        self._ended: collections.OrderedDict[str, float] = collections.OrderedDict()

    def __len__(self) -> int:
        return len(self._ended)

    def add(self, payload_id: str, age: float = 0.0) -> list[str]:
        """Note that a payload ended `age` seconds ago; returns the ids to evict now.

        Add payloads in the order they ended: expiry looks at the oldest first.
        """
        self._ended[payload_id] = time.monotonic() - max(age, 0.0)
        return self.due()

    def forget(self, payload_id: str) -> None:
        self._ended.pop(payload_id, None)

    def due(self) -> list[str]:
        """Ids past the count or the age limit, oldest first, removed from here."""
        evict = []
        while len(self._ended) > self._keep:
            evict.append(self._ended.popitem(last=False)[0])
        if self._keep_for is not None:
            horizon = time.monotonic() - self._keep_for
            while self._ended:
                payload_id, ended = next(iter(self._ended.items()))
                if ended > horizon:
                    break
                del self._ended[payload_id]
                evict.append(payload_id)
        return evict

    def next_expiry(self) -> float | None:
        """Seconds until the oldest kept payload passes `keep_for`, or None."""
        if self._keep_for is None or not self._ended:
            return None
        oldest = next(iter(self._ended.values()))
        return max(0.0, oldest + self._keep_for - time.monotonic())
