"""The feed of every status transition, kept for a while so readers can resume by id."""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator

from pericles.changes import Changes
from pericles.model import Payload

_KEY = "feed"


class StatusFeed:
    """The last `keep` transitions of all payloads, numbered from 1 in the order they happened."""

    def __init__(self, keep: int = 10_000) -> None:
        self._events: deque[tuple[int, Payload]] = deque(maxlen=keep)
        self._last = 0
        self._changes = Changes()

    @property
    def last(self) -> int:
        return self._last

    def publish(self, record: Payload) -> None:
        self._last += 1
        self._events.append((self._last, record))
        self._changes.notify(_KEY)

    def close(self) -> None:
        """End every reader (see `Changes.close`)."""
        self._changes.close()

    def since(self, seq: int) -> list[tuple[int, Payload]]:
        """Transitions after number `seq`; older ones than the feed keeps are gone."""
        if not self._events or self._events[-1][0] <= seq:
            return []
        first = self._events[0][0]
        start = max(seq - first + 1, 0)
        return [self._events[i] for i in range(start, len(self._events))]

    async def follow(
        self, after: int, heartbeat: float
    ) -> AsyncIterator[tuple[int, Payload] | None]:
        """Transitions after `after`, forever; None after `heartbeat` seconds of quiet."""
        while True:
            version = self._changes.version(_KEY)
            events = self.since(after)
            for event in events:
                after = event[0]
                yield event
            if self._changes.closed:
                return  # shutting down: the client resumes elsewhere with its last event id
            if not events and not await self._changes.wait(_KEY, version, heartbeat):
                yield None
