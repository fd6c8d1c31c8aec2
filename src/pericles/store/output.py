"""Bounded capture of one output stream: the first half and the latest half are kept."""

from __future__ import annotations


class OutputBuffer:
    """Keeps at most `limit` bytes of a stream: its head and its most recent tail.

    Offsets count from the start of the stream. Once more than `limit` bytes have been
    written, the bytes between the head and the tail are dropped and counted in `dropped`.
    """

    __slots__ = ("_head", "_head_limit", "_tail", "_tail_limit", "total")

    def __init__(self, limit: int) -> None:
        self._head_limit = limit - limit // 2
        self._tail_limit = limit // 2
        self._head = bytearray()
        self._tail = bytearray()
        self.total = 0

    @property
    def dropped(self) -> int:
        return self.total - len(self._head) - len(self._tail)

    def append(self, data: bytes) -> None:
        self.total += len(data)
        room = self._head_limit - len(self._head)
        if room > 0:
            self._head += data[:room]
            data = data[room:]
        if not data or self._tail_limit == 0:
            return
        self._tail += data
        excess = len(self._tail) - self._tail_limit
        if excess > 0:
            # CPython drops a bytearray's leading bytes by moving its start: no copy.
            del self._tail[:excess]

    def read(self, offset: int = 0) -> tuple[bytes, int]:
        """The kept bytes from `offset` on, and how many bytes the range skips as dropped."""
        head_end = len(self._head)
        tail_start = self.total - len(self._tail)
        if offset < head_end:
            return bytes(self._head[offset:]) + bytes(self._tail), self.dropped
        if offset < tail_start:
            return bytes(self._tail), tail_start - offset
        return bytes(self._tail[offset - tail_start :]), 0
