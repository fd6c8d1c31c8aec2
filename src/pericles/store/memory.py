"""The in-memory store: the seed's behaviour, nothing survives a restart."""

from __future__ import annotations

from pericles.errors import PayloadNotFound
from pericles.model import Payload
from pericles.store.base import Store
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
