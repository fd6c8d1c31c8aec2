"""Named locks for runs that must not overlap (an action's `concurrency` or `lock`).

A lock has holders (payloads running, or about to, under it) and a line of payloads
waiting for it, first come first served. When a holder lets go, the lock passes straight
to the first in line, which is then reserved a place among the holders before it starts:
a payload that asks later can never overtake one that waits.
"""

from __future__ import annotations

import collections
from typing import Generic, TypeVar

T = TypeVar("T")


class Locks(Generic[T]):
    def __init__(self) -> None:
        self._holders: dict[str, set[str]] = {}
        self._lines: dict[str, collections.OrderedDict[str, T]] = {}
        #: payload id -> the lock it waits for
        self._waiting: dict[str, str] = {}

    def __len__(self) -> int:
        """How many payloads wait for a lock."""
        return len(self._waiting)

    def take(self, name: str, limit: int, payload_id: str) -> bool:
        """Hold `name` for `payload_id` if it may run now (or holds it already)."""
        holders = self._holders.setdefault(name, set())
        if payload_id in holders:
            return True
        if len(holders) < limit and not self._lines.get(name):
            holders.add(payload_id)
            return True
        return False

    def wait(self, name: str, payload_id: str, item: T) -> None:
        """Put `payload_id` in line for `name`."""
        self._lines.setdefault(name, collections.OrderedDict())[payload_id] = item
        self._waiting[payload_id] = name

    def release(self, name: str, payload_id: str) -> T | None:
        """`payload_id` lets go of `name`; the item of the first in line, now holding it."""
        holders = self._holders.get(name, set())
        if payload_id not in holders:
            return None
        holders.discard(payload_id)
        line = self._lines.get(name)
        if line:
            next_id, item = line.popitem(last=False)
            del self._waiting[next_id]
            holders.add(next_id)
            return item
        if not holders:
            self._holders.pop(name, None)
            self._lines.pop(name, None)
        return None

    def remove(self, payload_id: str) -> T | None:
        """Take a waiting payload out of its line: its item, or None when it was not waiting."""
        name = self._waiting.pop(payload_id, None)
        if name is None:
            return None
        return self._lines[name].pop(payload_id)

    def waiting_for(self, payload_id: str) -> tuple[str, list[str], int] | None:
        """(lock, its holders, place in line from 1) for a waiting payload, else None."""
        name = self._waiting.get(payload_id)
        if name is None:
            return None
        place = list(self._lines[name]).index(payload_id) + 1
        return name, sorted(self._holders.get(name, ())), place

    def drain(self) -> list[T]:
        """Every waiting item, lines emptied (at shutdown)."""
        items = [item for line in self._lines.values() for item in line.values()]
        self._lines.clear()
        self._waiting.clear()
        return items
