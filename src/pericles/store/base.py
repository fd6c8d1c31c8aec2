"""The store interface every backend implements.

A store keeps records and output; it never decides a transition. The service does.
"""

from __future__ import annotations

import abc

from pericles.model import Payload


class Store(abc.ABC):
    @abc.abstractmethod
    async def add(self, record: Payload) -> None:
        """Keep a new record; its id must not be known yet."""

    @abc.abstractmethod
    async def put(self, record: Payload) -> None:
        """Replace the record with the same id."""

    @abc.abstractmethod
    async def get(self, payload_id: str) -> Payload:
        """The record with this id; raises `PayloadNotFound`."""

    @abc.abstractmethod
    async def list(self) -> list[Payload]:
        """Every record, oldest first."""

    @abc.abstractmethod
    async def append_output(self, payload_id: str, stream: str, data: bytes) -> None:
        """Add bytes a payload wrote to `stream` ("stdout" or "stderr")."""

    @abc.abstractmethod
    async def read_output(self, payload_id: str, stream: str, offset: int = 0) -> tuple[bytes, int]:
        """Kept bytes of `stream` from `offset`, and how many bytes the range lost as dropped."""

    async def close(self) -> None:
        """Release what the store holds open."""
        return None
