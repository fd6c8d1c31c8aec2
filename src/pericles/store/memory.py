"""The in-memory store: the seed's behaviour, nothing survives a restart."""

from __future__ import annotations

import builtins

from pericles.errors import PayloadNotFound, StaleRecord
from pericles.model import Payload, Status
from pericles.store.base import ListQuery, Page, Store
from pericles.store.output import STREAMS, OutputLog, Piece


class MemoryStore(Store):
    def __init__(self, max_output: int) -> None:
        self._max_output = max_output
        # dicts keep insertion order, which is creation order: oldest first for free.
        self._records: dict[str, Payload] = {}
        # Only payloads that wrote something get a log, so a silent payload costs none.
        self._output: dict[str, OutputLog] = {}

    async def add(self, record: Payload) -> None:
        if record.id in self._records:
            raise ValueError(f"payload {record.id} already stored")
        self._records[record.id] = record

    async def put(self, record: Payload, before: Status | None = None) -> None:
        current = self._records.get(record.id)
        if current is None:
            raise PayloadNotFound(record.id)
        if before is not None and current.state is not before:
            raise StaleRecord(record.id, current.status, record.status)
        self._records[record.id] = record

    async def get(self, payload_id: str) -> Payload:
        try:
            return self._records[payload_id]
        except KeyError:
            raise PayloadNotFound(payload_id) from None

    async def list(self) -> list[Payload]:
        return list(self._records.values())

    async def query(self, query: ListQuery) -> Page:
        if query.after is not None and query.after not in self._records:
            raise PayloadNotFound(query.after)
        records = reversed(self._records.values()) if query.descending else self._records.values()
        found: list[Payload] = []
        skipping = query.after is not None
        for record in records:
            if skipping:
                skipping = record.id != query.after
                continue
            if not query.matches(record):
                continue
            if query.limit is not None and len(found) == query.limit:
                return Page(found, more=True)
            found.append(record)
        return Page(found, more=False)

    async def delete(self, payload_id: str) -> None:
        if self._records.pop(payload_id, None) is None:
            raise PayloadNotFound(payload_id)
        self._output.pop(payload_id, None)

    async def append_output(self, payload_id: str, stream: str, data: bytes) -> tuple[int, int]:
        log = self._output.get(payload_id)
        if log is None:
            log = self._output[payload_id] = OutputLog(self._max_output)
        log.append(stream, data)
        return log.streams[stream].total, log.streams[stream].dropped

    async def _log(self, payload_id: str) -> OutputLog | None:
        """The payload's output log, None when it wrote nothing; raises `PayloadNotFound`.

        A hook: the sqlite store, which keeps only live logs in memory, reads others from disk.
        """
        if payload_id not in self._records:
            raise PayloadNotFound(payload_id)
        return self._output.get(payload_id)

    async def read_output(self, payload_id: str, stream: str, offset: int) -> tuple[bytes, int]:
        log = await self._log(payload_id)
        if log is None:
            return b"", 0
        if stream == "both":
            return log.read_both(offset)
        return log.read(stream, offset)

    async def output_pieces(
        self, payload_id: str, positions: dict[str, int]
    ) -> builtins.list[Piece]:
        log = await self._log(payload_id)
        return [] if log is None else log.pieces(positions)

    async def output_positions(self, payload_id: str, offset: int) -> dict[str, int]:
        log = await self._log(payload_id)
        if log is None:
            return dict.fromkeys(STREAMS, 0)
        return log.positions_at(offset)
