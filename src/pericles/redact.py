"""Replace a payload's secret values by `***` in its output, before anything stores it.

A secret may arrive split across two reads of a pipe, so each stream holds back the last
(longest secret - 1) bytes of what it has seen until the next chunk or the end: whatever
is released can no longer be the start of a secret. Offsets, byte counts and everything
downstream are over the redacted stream; the raw bytes are never kept.

Where a match starts decides it: at a position with at least `longest` bytes after it,
every secret either matches there or does not, and the longest secret that matches wins.
A held-back tail means a process that prints a prompt and waits shows its last few bytes
only once it writes more or ends.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

MASK = b"***"


class Redactor:
    """Redaction state for one payload: a held-back tail per stream."""

    def __init__(self, secrets: Iterable[str]) -> None:
        values = sorted({s.encode() for s in secrets if s}, key=len, reverse=True)
        # Longest first, so that at one position the longest secret wins.
        self._pattern = re.compile(b"|".join(re.escape(v) for v in values))
        self._hold = max(len(v) for v in values) - 1
        self._held: dict[str, bytes] = {}

    def feed(self, stream: str, data: bytes) -> bytes:
        """The redacted bytes of `stream` that are safe to release now."""
        buffer = self._held.pop(stream, b"") + data
        cut = max(len(buffer) - self._hold, 0)
        out = bytearray()
        done = 0
        for match in self._pattern.finditer(buffer):
            if match.start() >= cut:
                break
            out += buffer[done : match.start()] + MASK
            done = match.end()
        cut = max(cut, done)
        out += buffer[done:cut]
        if cut < len(buffer):
            self._held[stream] = buffer[cut:]
        return bytes(out)

    def flush(self, stream: str) -> bytes:
        """The rest of `stream`, redacted: call once the process has ended."""
        rest = self._held.pop(stream, b"")
        return self._pattern.sub(MASK, rest)
