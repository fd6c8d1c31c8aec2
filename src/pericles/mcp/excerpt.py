"""Output bounded for a model's context: the head and the tail, and how much lies between.

A model reads what a tool answers in full, so a chatty command must not flood it: it gets
the first and the last bytes (where a command's banner and its verdict usually are) and the
count of what was left out. Pure functions: no I/O, nothing of ours imported.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Excerpt:
    #: The text shown: invalid UTF-8 replaced, a marker where bytes were left out.
    text: str
    #: Bytes left out, by this bound and by the store's own (`--max-output`).
    omitted: int


def marker(omitted: int) -> str:
    return f"\n[... {omitted} bytes omitted ...]\n"


def head_and_tail(data: bytes, limit: int, dropped: int = 0) -> Excerpt:
    """At most `limit` bytes of `data`: its first and last halves when it is longer.

    `dropped` counts bytes the store already left out of `data`; the store keeps each
    stream's head and tail, so its gap is shown in the middle as this bound's is.
    """
    if len(data) <= limit:
        if not dropped:
            return Excerpt(_text(data), 0)
        middle = len(data) // 2
        return Excerpt(_text(data[:middle]) + marker(dropped) + _text(data[middle:]), dropped)
    head = limit - limit // 2
    tail = limit // 2
    omitted = len(data) - head - tail + dropped
    return Excerpt(_text(data[:head]) + marker(omitted) + _text(data[len(data) - tail :]), omitted)


def _text(data: bytes) -> str:
    return data.decode("utf-8", "replace")
