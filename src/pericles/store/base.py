"""The store interface every backend implements.

A store keeps records and output; it never decides a transition. The service does.
"""

from __future__ import annotations

import abc
import dataclasses

from pericles.model import Payload, Status


@dataclasses.dataclass(frozen=True, slots=True)
class ListQuery:
    """Which records a list asks for. The defaults ask for every record, oldest first."""

    #: Keep records in any of these states; empty keeps all. ERROR matches every `error:...`.
    statuses: frozenset[Status] = frozenset()
    #: Keep records that carry every one of these (key, value) labels.
    labels: tuple[tuple[str, str], ...] = ()
    #: At most this many records; None for no limit.
    limit: int | None = None
    #: Start after the record with this id (cursor pagination).
    after: str | None = None
    descending: bool = False

    def matches(self, record: Payload) -> bool:
        if self.statuses and record.state not in self.statuses:
            return False
        if self.labels:
            labels = record.labels or {}
            return all(labels.get(key) == value for key, value in self.labels)
        return True


@dataclasses.dataclass(frozen=True, slots=True)
class Page:
    records: list[Payload]
    #: True when records past this page match too: ask again with `after` the last id.
    more: bool


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
    async def query(self, query: ListQuery) -> Page:
        """The records a query asks for, in creation order (or reversed); raises
        `PayloadNotFound` when `query.after` names no record."""

    @abc.abstractmethod
    async def delete(self, payload_id: str) -> None:
        """Forget a record and its output; raises `PayloadNotFound`."""

    @abc.abstractmethod
    async def append_output(self, payload_id: str, stream: str, data: bytes) -> None:
        """Add bytes a payload wrote to `stream` ("stdout" or "stderr")."""

    @abc.abstractmethod
    async def read_output(self, payload_id: str, stream: str, offset: int = 0) -> tuple[bytes, int]:
        """Kept bytes of `stream` from `offset`, and how many bytes the range lost as dropped."""

    async def close(self) -> None:
        """Release what the store holds open."""
        return None
