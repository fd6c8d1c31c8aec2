"""Idempotency keys: a repeated create with the same key returns the first payload."""

from __future__ import annotations

import collections
import time

#: How long a key is remembered, seconds.
KEY_LIFETIME = 24 * 3600


class IdempotencyKeys:
    """Key -> payload id, for `lifetime` seconds, at most `capacity` keys (oldest go first)."""

    def __init__(self, capacity: int, lifetime: float = KEY_LIFETIME) -> None:
        self._capacity = capacity
        self._lifetime = lifetime
        self._keys: collections.OrderedDict[str, tuple[str, float]] = collections.OrderedDict()

    def get(self, key: str) -> str | None:
        self._expire()
        entry = self._keys.get(key)
        return entry[0] if entry is not None else None

    def put(self, key: str, payload_id: str) -> None:
        self._keys[key] = (payload_id, time.monotonic() + self._lifetime)
        self._keys.move_to_end(key)
        while len(self._keys) > self._capacity:
            self._keys.popitem(last=False)

    def discard(self, key: str) -> None:
        self._keys.pop(key, None)

    def _expire(self) -> None:
        now = time.monotonic()
        while self._keys:
            key, (_, expires) = next(iter(self._keys.items()))
            if expires > now:
                return
            del self._keys[key]
