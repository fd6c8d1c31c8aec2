"""Webhook deliveries: the signature that admits one, its arguments, and refusing replays.

A Git host or CI signs each delivery with the action's `hook_secret`, GitHub style:
`X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the raw body>`. The arguments are read
from the JSON body with the action's `hook_args`, a map from argument name to an RFC 6901
JSON pointer; a pointer that finds nothing leaves the argument to its default.
"""

from __future__ import annotations

import collections
import hashlib
import hmac
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import jsonpointer

SIGNATURE_HEADER = "X-Hub-Signature-256"
#: Where senders put their delivery's id; the first one present is used.
DELIVERY_HEADERS = ("X-GitHub-Delivery", "X-Gitea-Delivery", "X-Delivery-Id")
_PREFIX = "sha256="


def signed(secret: bytes, body: bytes, header: str | None) -> bool:
    """Whether `header` is `sha256=` and the HMAC-SHA256 of `body` under `secret`."""
    if header is None or not header.startswith(_PREFIX):
        return False
    expected = hmac.new(secret, body, hashlib.sha256).hexdigest()
    # Compared as bytes of equal-length digests: the time says nothing about how close it was.
    given = header[len(_PREFIX) :].strip().lower().encode("ascii", "replace")
    return hmac.compare_digest(expected.encode(), given)


def hook_args(pointers: Mapping[str, str], body: Any) -> dict[str, Any]:
    """The arguments `pointers` find in `body`; those that find nothing are left out."""
    missing = object()
    args = {}
    for name, pointer in pointers.items():
        value = jsonpointer.resolve_pointer(body, pointer, missing)
        if value is not missing:
            args[name] = value
    return args


class Deliveries:
    """Deliveries seen in the last `window` seconds, to refuse a replay of one.

    A delivery is known by each of its keys: its id when the sender gives one, and its
    signature, so a replay with a changed id header (the header is not signed) is still
    caught. At most `size` entries are kept, the oldest going first; only signed deliveries
    are ever noted, so filling it takes the secret.
    """

    def __init__(self, size: int = 10_000, clock: Callable[[], float] = time.monotonic) -> None:
        self._size = size
        self._clock = clock
        self._seen: collections.OrderedDict[str, float] = collections.OrderedDict()

    def _expire(self, now: float) -> None:
        while self._seen:
            key, until = next(iter(self._seen.items()))
            if until > now and len(self._seen) <= self._size:
                return
            del self._seen[key]

    def note(self, keys: Iterable[str], window: float) -> bool:
        """Note a delivery; False (noting nothing) when one of its keys was seen already."""
        now = self._clock()
        self._expire(now)
        keys = list(keys)
        if any(self._seen.get(key, now) > now for key in keys):
            return False
        for key in keys:
            self._seen[key] = now + window
        self._expire(now)
        return True

    def forget(self, keys: Iterable[str]) -> None:
        """Forget a delivery that was not acted on, so that sending it again may work."""
        for key in keys:
            self._seen.pop(key, None)
