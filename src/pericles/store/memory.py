"""The in-memory store: the seed's behaviour, nothing survives a restart."""

from __future__ import annotations

from pericles.errors import PayloadNotFound
from pericles.model import Payload
from pericles.store.base import ListQuery, Page, Store
from pericles.store.output import OutputBuffer


class MemoryStore(Store):
    def __init__(self, max_output: int) -> None:
        self._max_output = max_output
        # dicts keep insertion order, which is creation order: oldest first for free.
        self._records: dict[str, Payload] = {}
        # Only payloads that wrote something get buffers, so a silent payload costs none.
        self._output: dict[tuple[str, str], OutputBuffer] = {}

    async def add(self, record: Payload) -> None:
        if record.id in self._records:
            raise ValueError(f"payload {record.id} already stored")
        self._records[record.id] = record

    async def put(self, record: Payload) -> None:
        if record.id not in self._records:
            raise PayloadNotFound(record.id)
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
        self._output.pop((payload_id, "stdout"), None)
        self._output.pop((payload_id, "stderr"), None)

    async def append_output(self, payload_id: str, stream: str, data: bytes) -> None:
        buffer = self._output.get((payload_id, stream))
        if buffer is None:
            buffer = self._output[payload_id, stream] = OutputBuffer(self._max_output)
        buffer.append(data)

    async def read_output(self, payload_id: str, stream: str, offset: int = 0) -> tuple[bytes, int]:
        if payload_id not in self._records:
            raise PayloadNotFound(payload_id)
        buffer = self._output.get((payload_id, stream))
        if buffer is None:
            return b"", 0
        return buffer.read(offset)
