"""Replace a payload's secret values by `***` in its output, before anything stores it.

A secret may arrive split across two reads of a pipe, so each stream holds back its tail from
the first position where what it has seen could still be the start of a secret (at most
longest secret - 1 bytes), until the next chunk or the end. Offsets, byte counts and
everything downstream are over the redacted stream; the raw bytes are never kept.

The result is the same as masking the whole stream at once, wherever the reads split it:
matches are leftmost, the longest secret wins at a position, and a match is only taken
where every secret could be told apart. Only output that ends in what may be a secret's
beginning waits, so a prompt such as "password: " shows at once unless a secret starts
with its last bytes.
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
        self._values = values
        self._pattern = re.compile(b"|".join(re.escape(v) for v in values))
        self._hold = max(len(v) for v in values) - 1
        self._held: dict[str, bytes] = {}

    def _undecided(self, buffer: bytes) -> int:
        """The first position from which `buffer` may still be the start of a secret."""
        for i in range(max(len(buffer) - self._hold, 0), len(buffer)):
            rest = buffer[i:]
            if any(len(v) > len(rest) and v.startswith(rest) for v in self._values):
                return i
        return len(buffer)

    def feed(self, stream: str, data: bytes) -> bytes:
        """The redacted bytes of `stream` that are safe to release now."""
        buffer = self._held.pop(stream, b"") + data
        cut = self._undecided(buffer)
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
