"""Bounded capture of a payload's output, in the order the server read it.

Each stream keeps its first half (`head`) and its most recent half (`tail`) of `limit`
bytes; what lies between is dropped and counted. Chunks remember their offset in their own
stream and in the combined output (`coff`), so the two streams can be read back interleaved
as they came, and a reader can resume from any offset.
"""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Callable, Iterable, Iterator

from pericles.model import STREAMS, Piece

# A chunk is appended to the one before when no other stream wrote in between, so most
# output makes few chunks. These bound the count when the two streams alternate in tiny
# writes: past them the head counts as full, and the oldest tail chunks are merged.
_MAX_HEAD_CHUNKS = 4096
_MAX_TAIL_CHUNKS = 4096
_COALESCE_BELOW = 65536


class Chunk:
    __slots__ = ("coff", "data", "offset")

    def __init__(self, offset: int, coff: int, data: bytes) -> None:
        self.offset = offset
        self.coff = coff
        # Kept as read: a large read from a chatty payload is stored without a copy, and
        # most such chunks leave the tail whole. Made a bytearray only to grow or trim it.
        self.data: bytes | bytearray | memoryview = data

    def extend(self, data: bytes | bytearray | memoryview) -> None:
        if not isinstance(self.data, bytearray):
            self.data = bytearray(self.data)
        self.data += data

    def prepend(self, data: bytes | bytearray | memoryview) -> None:
        if not isinstance(self.data, bytearray):
            self.data = bytearray(self.data)
        self.data[:0] = data

    def drop_front(self, count: int) -> None:
        if isinstance(self.data, bytearray):
            # CPython drops a bytearray's leading bytes by moving its start: no copy.
            del self.data[:count]
        else:
            # A view of what is kept: no copy of a large read the tail keeps only part of.
            # It holds the whole read until the chunk goes, at most twice what is kept.
            self.data = memoryview(self.data)[count:]

    @property
    def end(self) -> int:
        return self.offset + len(self.data)


class StreamLog:
    __slots__ = ("head", "head_bytes", "head_limit", "tail", "tail_bytes", "tail_limit", "total")

    def __init__(self, limit: int) -> None:
        self.head_limit = limit - limit // 2
        self.tail_limit = limit // 2
        self.head: list[Chunk] = []
        self.head_bytes = 0
        self.tail: deque[Chunk] = deque()
        self.tail_bytes = 0
        self.total = 0

    @property
    def dropped(self) -> int:
        return self.total - self.head_bytes - self.tail_bytes

    def _head_open(self) -> bool:
        return self.head_bytes < self.head_limit and len(self.head) < _MAX_HEAD_CHUNKS

    def append(self, data: bytes, coff: int, extend_last: bool) -> None:
        offset = self.total
        self.total += len(data)
        if self._head_open():
            room = self.head_limit - self.head_bytes
            part, data = data[:room], data[room:]
            if extend_last and self.head and not self.tail:
                self.head[-1].extend(part)
            else:
                self.head.append(Chunk(offset, coff, part))
            self.head_bytes += len(part)
            offset += len(part)
            coff += len(part)
            extend_last = False
        if not data:
            return
        if extend_last and self.tail and len(self.tail[-1].data) < _COALESCE_BELOW:
            self.tail[-1].extend(data)
        else:
            self.tail.append(Chunk(offset, coff, data))
        self.tail_bytes += len(data)
        self._trim()

    def _trim(self) -> None:
        # The tail keeps what the head left of the limit: a head closed early by its chunk
        # count (tiny alternating writes) must not make bytes below the limit drop.
        excess = self.tail_bytes - (self.head_limit + self.tail_limit - self.head_bytes)
        while excess > 0 and self.tail:
            first = self.tail[0]
            if len(first.data) <= excess:
                self.tail.popleft()
                self.tail_bytes -= len(first.data)
                excess -= len(first.data)
            else:
                first.drop_front(excess)
                first.offset += excess
                first.coff += excess
                self.tail_bytes -= excess
                excess = 0
        while len(self.tail) > _MAX_TAIL_CHUNKS:
            # Merging loses where the other stream's bytes fell between these two: the price
            # of a bound on memory when streams alternate in tiny writes.
            first = self.tail.popleft()
            self.tail[0].prepend(first.data)
            self.tail[0].offset = first.offset
            self.tail[0].coff = first.coff

    def chunks_from(self, offset: int) -> Iterator[Chunk]:
        """Chunks holding bytes at or after `offset`, oldest first."""
        if self.head and offset < self.head[-1].end:
            starts = [c.offset for c in self.head]
            first = max(bisect.bisect_right(starts, offset) - 1, 0)
            yield from self.head[first:]
            yield from self.tail
            return
        # Readers that follow live output ask for the newest bytes: look from the end.
        index = len(self.tail)
        while index > 0 and self.tail[index - 1].end > offset:
            index -= 1
        for i in range(index, len(self.tail)):
            yield self.tail[i]


def _clip(stream: str, chunk: Chunk, offset: int) -> Piece:
    skip = max(offset - chunk.offset, 0)
    return Piece(stream, chunk.offset + skip, chunk.coff + skip, bytes(chunk.data[skip:]))


class OutputLog:
    """The captured output of one payload."""

    __slots__ = ("_last", "streams", "total")

    def __init__(self, limit: int) -> None:
        self.streams = {name: StreamLog(limit) for name in STREAMS}
        self.total = 0
        self._last = ""

    def append(self, stream: str, data: bytes) -> None:
        self.streams[stream].append(data, self.total, extend_last=self._last == stream)
        self.total += len(data)
        self._last = stream

    def pieces(self, positions: dict[str, int]) -> list[Piece]:
        """Kept bytes of each stream from its position on, in the order they were read."""
        found: list[Piece] = []
        for name, log in self.streams.items():
            start = positions.get(name)
            if start is not None:
                found.extend(_clip(name, c, start) for c in log.chunks_from(start))
        found.sort(key=lambda p: p.coff)
        return found

    def read(self, stream: str, offset: int) -> tuple[bytes, int]:
        """Bytes of `stream` from `offset`, and how many in that range were dropped."""
        return _join(self.pieces({stream: offset}), offset, _stream_position)

    def positions_at(self, coff: int) -> dict[str, int]:
        """Each stream's offset at `coff` in the combined output."""
        return {name: _stream_offset_at(log, coff) for name, log in self.streams.items()}

    def read_both(self, offset: int) -> tuple[bytes, int]:
        """Both streams interleaved, from `offset` in the combined output."""
        positions = self.positions_at(offset)
        pieces = [p for p in self.pieces(positions) if p.coff + len(p.data) > offset]
        pieces = [_reclip(p, offset) for p in pieces]
        data, _ = _join(pieces, offset, _combined_position)
        # What is missing from the range is what was dropped. (Counting the gaps between
        # pieces would not do: a merged tail chunk holds bytes written after its `coff`.)
        return data, max(self.total - offset, 0) - len(data)


def _stream_offset_at(log: StreamLog, coff: int) -> int:
    for chunk in (*log.head, *log.tail):
        if chunk.coff + len(chunk.data) > coff:
            return chunk.offset + max(coff - chunk.coff, 0)
    return log.total


def _reclip(piece: Piece, coff: int) -> Piece:
    skip = max(coff - piece.coff, 0)
    if not skip:
        return piece
    return Piece(piece.stream, piece.offset + skip, piece.coff + skip, piece.data[skip:])


def _stream_position(piece: Piece) -> int:
    return piece.offset


def _combined_position(piece: Piece) -> int:
    return piece.coff


def _join(
    pieces: Iterable[Piece], start: int, position: Callable[[Piece], int]
) -> tuple[bytes, int]:
    """The pieces' bytes joined, and the size of the gaps between them (dropped bytes)."""
    out = bytearray()
    dropped = 0
    expected = start
    for piece in pieces:
        at = position(piece)
        if at > expected:
            dropped += at - expected
        out += piece.data
        expected = at + len(piece.data)
    return bytes(out), dropped
