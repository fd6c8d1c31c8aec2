"""An ended payload's kept output as rows, and back: how the sqlite store keeps output.

Only the bytes `OutputLog` kept (each stream's head and tail) are written, with the offsets
that let a reader resume and see what was dropped, so a restored log reads exactly as the
live one did.
"""

from __future__ import annotations

from collections.abc import Iterable

from pericles.model import STREAMS
from pericles.store.output import Chunk, OutputLog

#: (stream, part, offset, coff, data): part 0 is the stream's head, 1 its tail.
ChunkRow = tuple[str, int, int, int, bytes]
#: (stream, total bytes written to it)
TotalRow = tuple[str, int]

_HEAD, _TAIL = 0, 1


def chunk_rows(log: OutputLog) -> list[ChunkRow]:
    rows: list[ChunkRow] = []
    for name, stream in log.streams.items():
        rows.extend((name, _HEAD, c.offset, c.coff, bytes(c.data)) for c in stream.head)
        rows.extend((name, _TAIL, c.offset, c.coff, bytes(c.data)) for c in stream.tail)
    return rows


def total_rows(log: OutputLog) -> list[TotalRow]:
    return [(name, stream.total) for name, stream in log.streams.items()]


def restore(limit: int, chunks: Iterable[ChunkRow], totals: Iterable[TotalRow]) -> OutputLog:
    """The log that `chunk_rows` and `total_rows` were taken from (chunks in any order)."""
    log = OutputLog(limit)
    for stream, part, offset, coff, data in sorted(chunks, key=lambda row: row[3]):
        if stream not in STREAMS:
            continue
        target = log.streams[stream]
        chunk = Chunk(offset, coff, data)
        if part == _HEAD:
            target.head.append(chunk)
            target.head_bytes += len(data)
        else:
            target.tail.append(chunk)
            target.tail_bytes += len(data)
    for stream, total in totals:
        if stream in STREAMS:
            log.streams[stream].total = total
    log.total = sum(stream.total for stream in log.streams.values())
    return log
