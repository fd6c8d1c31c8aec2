"""The store interface every backend implements.

A store keeps records and output; it never decides a transition. The service does.
"""

from __future__ import annotations

import abc
import builtins
import dataclasses

from pericles.model import Payload, Status
from pericles.store.output import Piece


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
    #: Keep records whose command line (cmd and params, space-joined) holds this text,
    #: compared case-insensitively. Empty keeps all.
    text: str = ""

    def matches(self, record: Payload) -> bool:
        if self.statuses and record.state not in self.statuses:
            return False
        if self.text and self.text.casefold() not in command_line(record).casefold():
            return False
        if self.labels:
            labels = record.labels or {}
            return all(labels.get(key) == value for key, value in self.labels)
        return True


def command_line(record: Payload) -> str:
    return " ".join([record.cmd, *record.params])


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
    async def append_output(self, payload_id: str, stream: str, data: bytes) -> tuple[int, int]:
        """Add bytes a payload wrote to `stream` ("stdout" or "stderr").

        Returns the stream's total bytes written so far and how many of them were dropped.
        """

    @abc.abstractmethod
    async def read_output(self, payload_id: str, stream: str, offset: int) -> tuple[bytes, int]:
        """Kept bytes from `offset` on, and how many in that range were dropped.

        `stream` is "stdout", "stderr", or "both": the two interleaved in the order they were
        read, with `offset` counted in the combined output.
        """

    @abc.abstractmethod
    async def output_pieces(
        self, payload_id: str, positions: dict[str, int]
    ) -> builtins.list[Piece]:
        """Kept bytes of each stream named in `positions` from its offset, in read order."""

    @abc.abstractmethod
    async def output_positions(self, payload_id: str, offset: int) -> dict[str, int]:
        """Where each stream stands at `offset` of the combined output."""

    async def open(self) -> None:
        """Make the store ready (open files, load what it keeps); raises `StoreUnavailable`."""
        return None

    async def get_meta(self, key: str) -> str | None:
        """A value the server noted for its next start (e.g. the boot it ran in)."""
        return None

    async def set_meta(self, key: str, value: str) -> None:
        """Note a value for the next start; a store that keeps nothing forgets it."""
        return None

    async def ping(self) -> None:
        """Raise unless the store can be read and written now."""
        return None

    async def close(self) -> None:
        """Release what the store holds open."""
        return None
