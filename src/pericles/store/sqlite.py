"""The sqlite store: records and ended payloads' output kept in one file, across restarts.

The rules (the record index in memory, output logs, when output is saved) are the base
`Store`'s; this backend only persists what it is handed, and loads it back: every record
once at `open()`, an ended payload's output on demand. Writes go behind, to one database
thread:

- `add` returns once the record is committed, so a `201` is only ever answered for a record
  that a crash of the server cannot take away;
- later changes (`put`, `delete`) return at once and are committed in a batch at most
  `_BEHIND` seconds later, sooner when an `add` or a meta value commits first (they join its
  transaction). Whatever arrives while a batch commits makes up the next one (group commit),
  and several changes to one record in a batch are written once: a short payload's
  `working` and `finished` records are mostly one write. A crash loses at most the last
  batch: changes to payloads that were running, which the next start records as `lost`;
- output is saved at the base store's checkpoints while a payload runs, and for good with
  its terminal record; once that is committed its memory is released.

The event loop never waits on SQLite: all database work runs on the one thread of
`self._executor`, which also owns the connection (sqlite3 connections are not shared). A
batch's end comes back to the loop by one `call_soon_threadsafe`: each commit costs the loop
a few microseconds, not an asyncio future chained to a thread's.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import functools
import logging
import os
import sqlite3
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from pydantic import TypeAdapter

from pericles.errors import StoreUnavailable
from pericles.model import Delivery, Payload
from pericles.store.base import Store
from pericles.store.output import OutputLog
from pericles.store.snapshot import ChunkRow, TotalRow, chunk_rows, restore, total_rows
from pericles.store.sqlite_schema import (
    DELETE_DELIVERIES,
    DELETE_META,
    DELETE_PAYLOADS,
    INSERT_CHUNKS,
    INSERT_PAYLOADS,
    INSERT_TOTALS,
    PUT_DELIVERIES,
    PUT_META,
    SELECT_CHUNKS,
    SELECT_TOTALS,
    UPDATE_FROM,
    UPDATE_PAYLOAD,
    UPDATE_PAYLOADS,
    SqliteUrl,
    connect,
    delete_output,
    run_many,
    vacuum,
)

log = logging.getLogger("pericles.store")

T = TypeVar("T")
P = ParamSpec("P")

_RECORDS = TypeAdapter(Payload)
_DELIVERIES = TypeAdapter(Delivery)
#: Seconds before a batch that failed is tried again.
_RETRY_DELAY = 1.0
#: Seconds a change written behind waits for others to share its commit (measured with 32
#: clients creating /bin/true: 3 commits per payload without it, about 2 with it, and the
#: server's CPU per payload down by a tenth). What a crash may lose grows by as much.
_BEHIND = 0.005


@dataclasses.dataclass(frozen=True, slots=True)
class _Snapshot:
    """A payload's kept output as rows, copied on the event loop while the log may change."""

    chunks: list[ChunkRow]
    totals: list[TotalRow]
    #: The log of an ended payload: it changes no more, and is freed once written.
    ended: OutputLog | None = None

    @classmethod
    def of(cls, log: OutputLog, ended: bool) -> _Snapshot:
        return cls(chunk_rows(log), total_rows(log), log if ended else None)


@dataclasses.dataclass
class _Batch:
    """Changes to commit in one transaction; applied as adds, puts, outputs, then deletes.

    That order gives the same end state as the calls' own order: a record is added before
    anything else can name it, and a delete wipes whatever a put or output wrote before it.
    """

    adds: dict[str, Payload] = dataclasses.field(default_factory=dict)
    puts: dict[str, Payload] = dataclasses.field(default_factory=dict)
    outputs: dict[str, _Snapshot] = dataclasses.field(default_factory=dict)
    deletes: set[str] = dataclasses.field(default_factory=set)
    deliveries: dict[str, Delivery] = dataclasses.field(default_factory=dict)
    meta: dict[str, str] = dataclasses.field(default_factory=dict)
    #: Meta keys to remove (the "starting" notes of payloads that moved on).
    unmeta: set[str] = dataclasses.field(default_factory=set)
    #: Resolved once the batch is committed: awaited by `add` and `set_meta`.
    committed: asyncio.Future[None] | None = None

    def __bool__(self) -> bool:
        return bool(
            self.adds
            or self.puts
            or self.outputs
            or self.deletes
            or self.deliveries
            or self.meta
            or self.unmeta
        )


class SqliteStore(Store):
    persists_output = True

    def __init__(self, url: str, max_output: int) -> None:
        super().__init__(max_output)
        self._url = SqliteUrl.parse(url)
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="sqlite")
        self._conn: sqlite3.Connection | None = None
        self._next = _Batch()
        #: Resolved when the batch being written has come back (committed or failed).
        self._writing: asyncio.Future[None] | None = None
        self._retry: asyncio.TimerHandle | None = None
        #: Armed by a change written behind, when no commit is due before it.
        self._behind: asyncio.TimerHandle | None = None
        self._failure: str | None = None
        #: (st_dev, st_ino) of the file opened, to notice it being removed or replaced.
        self._identity: tuple[int, int] | None = None

    # -- opening and closing ------------------------------------------------------------

    async def _load(self) -> tuple[list[Payload], dict[str, str]]:
        records, meta = await self._on_thread(self._open)
        log.info("store: %d records in %s", len(records), self._url.path)
        return records, meta

    def _open(self) -> tuple[list[Payload], dict[str, str]]:
        self._conn = connect(self._url)
        try:
            rows = self._conn.execute("SELECT record FROM payloads ORDER BY seq").fetchall()
            records = [_RECORDS.validate_json(row[0]) for row in rows]
            meta = dict(self._conn.execute("SELECT key, value FROM meta").fetchall())
        except (sqlite3.Error, ValueError) as exc:
            self._conn.close()
            self._conn = None
            raise StoreUnavailable(f"{self._url.path}: cannot read its records: {exc}") from exc
        self._identity = self._file_identity()
        return records, meta

    def _file_identity(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self._url.path)
        except OSError:
            return None
        return st.st_dev, st.st_ino

    async def _close(self) -> None:
        """Commit what is waiting, then close the file."""
        if self._behind is not None:
            self._behind.cancel()
            self._behind = None
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        while self._writing is not None or self._next:
            if self._writing is None:
                self._flush()
            if self._writing is not None:
                await asyncio.wait({self._writing})
            if self._failure is not None:
                log.error("store: closing with changes not written: %s", self._failure)
                break
        for timer in (self._retry, self._behind):  # nothing runs after close
            if timer is not None:
                timer.cancel()
        self._retry = self._behind = None
        await self._on_thread(self._close_file)
        self._executor.shutdown()

    def _close_file(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    async def _ping(self) -> None:
        if self._conn is None:
            raise StoreUnavailable(f"{self._url.path} is not open")
        if self._failure is not None:
            raise StoreUnavailable(self._failure)
        # Writes to a removed or replaced file still succeed, into a file no restart will
        # open: everything from then on would be lost. Say so while it can be acted on.
        if self._identity is not None and self._file_identity() != self._identity:
            raise StoreUnavailable(f"{self._url.path} was removed or replaced since it was opened")
        await self._on_thread(self._select_one)

    def _select_one(self) -> None:
        if self._conn is None:
            raise StoreUnavailable(f"{self._url.path} is not open")
        try:
            self._conn.execute("SELECT 1").fetchall()
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"{self._url.path}: {exc}") from exc

    # -- what the base store hands over -------------------------------------------------

    async def _persist_new(self, record: Payload) -> None:
        self._next.adds[record.id] = record
        await self._commit()

    def _persist(self, record: Payload, final_output: OutputLog | None) -> None:
        if record.id in self._next.adds:  # not written yet: write the latest once
            self._next.adds[record.id] = record
        else:
            self._next.puts[record.id] = record
        if final_output is not None:
            self._next.outputs[record.id] = _Snapshot.of(final_output, ended=True)
        self._later()

    def _persist_running_output(self, logs: dict[str, OutputLog]) -> None:
        for payload_id, output in logs.items():
            self._next.outputs[payload_id] = _Snapshot.of(output, ended=False)
        self._later()

    def _persist_delete(self, payload_id: str) -> None:
        self._next.adds.pop(payload_id, None)
        self._next.puts.pop(payload_id, None)
        self._next.outputs.pop(payload_id, None)
        for delivery_id in [
            k for k, d in self._next.deliveries.items() if d.payload_id == payload_id
        ]:
            del self._next.deliveries[delivery_id]
        self._next.deletes.add(payload_id)
        self._later()

    def _forget_meta(self, key: str) -> None:
        # Gathered with the record change that follows: one transaction.
        self._next.meta.pop(key, None)
        self._next.unmeta.add(key)

    async def _persist_meta(self, key: str, value: str) -> None:
        self._next.meta[key] = value
        await self._commit()

    def _persist_delivery(self, delivery: Delivery) -> None:
        self._next.deliveries[delivery.id] = delivery
        self._later()

    async def _load_deliveries(self) -> list[Delivery]:
        rows = await self._on_thread(self._read_deliveries)
        return [_DELIVERIES.validate_json(row[0]) for row in rows]

    def _read_deliveries(self) -> list[tuple[str]]:
        return (
            self._connection().execute("SELECT delivery FROM deliveries ORDER BY rowid").fetchall()
        )

    async def _load_output(self, payload_id: str) -> OutputLog | None:
        chunks, totals = await self._on_thread(self._read_output, payload_id)
        return restore(self._max_output, chunks, totals)

    def _read_output(self, payload_id: str) -> tuple[list[ChunkRow], list[TotalRow]]:
        conn = self._connection()
        chunks = conn.execute(SELECT_CHUNKS, (payload_id,)).fetchall()
        totals = conn.execute(SELECT_TOTALS, (payload_id,)).fetchall()
        return chunks, totals

    # -- group commit -------------------------------------------------------------------

    async def _commit(self) -> None:
        """Wait until the batch being gathered now is committed."""
        batch = self._next
        if batch.committed is None:
            batch.committed = asyncio.get_running_loop().create_future()
        waiter = batch.committed
        self._flush()
        # Shielded: a client that goes away must not cancel a commit other adds wait on.
        await asyncio.shield(waiter)

    def _later(self) -> None:
        """Have the gathered batch written within `_BEHIND` seconds, or with a commit due
        sooner (an `add`, a meta value) or once the write under way ends."""
        if self._behind is None and self._writing is None and self._retry is None:
            self._behind = asyncio.get_running_loop().call_later(_BEHIND, self._flush)

    def _flush(self) -> None:
        """Start writing the gathered batch, unless a write is under way: its end starts it."""
        if self._behind is not None:
            self._behind.cancel()
            self._behind = None
        if self._writing is not None or self._retry is not None or not self._next:
            return
        batch, self._next = self._next, _Batch()
        loop = asyncio.get_running_loop()
        self._writing = loop.create_future()
        done = self._executor.submit(self._write, batch)
        # Called on the database thread: hands the outcome to the loop, nothing more.
        done.add_done_callback(
            lambda finished: loop.call_soon_threadsafe(self._written, batch, finished)
        )

    def _written(self, batch: _Batch, done: concurrent.futures.Future[None]) -> None:
        writing, self._writing = self._writing, None
        if writing is not None and not writing.done():
            writing.set_result(None)
        exc = done.exception()
        if exc is None:
            self._failure = None
            for payload_id, snapshot in batch.outputs.items():
                # Now on disk: an ended payload's log leaves memory (unless deleted since).
                if snapshot.ended is None:
                    log.debug("store: saved the output of payload %s so far", payload_id)
                else:
                    self._release_output(payload_id, snapshot.ended)
            if batch.committed is not None and not batch.committed.done():
                batch.committed.set_result(None)
            # What gathered meanwhile: at once if someone waits on it, else behind.
            if self._next.committed is not None:
                self._flush()
            elif self._next:
                self._later()
            return
        self._failure = f"{self._url.path}: {exc}"
        log.error("store: a write failed, retrying in %.0fs: %s", _RETRY_DELAY, self._failure)
        if batch.committed is not None and not batch.committed.done():
            batch.committed.set_exception(StoreUnavailable(self._failure))
        self._requeue(batch)
        self._retry = asyncio.get_running_loop().call_later(_RETRY_DELAY, self._retry_flush)

    def _requeue(self, batch: _Batch) -> None:
        """Put a failed batch's changes back, under the newer ones; its adds were refused."""
        later = self._next
        for payload_id, record in batch.puts.items():
            if payload_id in self._records and payload_id not in later.puts:
                later.puts[payload_id] = record
        for payload_id, output in batch.outputs.items():
            if payload_id in self._records:
                later.outputs.setdefault(payload_id, output)
        later.deletes |= batch.deletes
        for delivery_id, delivery in batch.deliveries.items():
            if delivery.payload_id in self._records:
                later.deliveries.setdefault(delivery_id, delivery)
        for key, value in batch.meta.items():
            later.meta.setdefault(key, value)
        later.unmeta |= batch.unmeta - later.meta.keys()

    def _retry_flush(self) -> None:
        self._retry = None
        self._flush()

    # -- on the database thread ---------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreUnavailable(f"{self._url.path} is not open")
        return self._conn

    def _write(self, batch: _Batch) -> None:
        conn = self._connection()
        try:
            conn.execute("BEGIN")
            try:
                _apply(conn, batch)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            if batch.deletes:
                vacuum(conn)
        except sqlite3.Error as exc:
            raise StoreUnavailable(str(exc)) from exc

    async def _on_thread(self, func: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        call = functools.partial(func, *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(self._executor, call)


def _apply(conn: sqlite3.Connection, batch: _Batch) -> None:
    if batch.adds:
        rows = [(r.id, r.status, _RECORDS.dump_json(r)) for r in batch.adds.values()]
        run_many(conn, INSERT_PAYLOADS, rows)
    if batch.puts:
        rows = [(r.id, r.status, _RECORDS.dump_json(r)) for r in batch.puts.values()]
        if UPDATE_FROM:
            run_many(conn, UPDATE_PAYLOADS, rows)
        else:
            conn.executemany(UPDATE_PAYLOAD, rows)
    if batch.outputs:
        # A snapshot replaces the payload's earlier one (a running payload's checkpoint).
        delete_output(conn, batch.outputs.keys())
        chunks = [(i, *row) for i, snapshot in batch.outputs.items() for row in snapshot.chunks]
        totals = [(i, *row) for i, snapshot in batch.outputs.items() for row in snapshot.totals]
        run_many(conn, INSERT_CHUNKS, chunks)
        run_many(conn, INSERT_TOTALS, totals)
    if batch.deliveries:
        deliveries = batch.deliveries.values()
        rows = [(d.id, d.payload_id, _DELIVERIES.dump_json(d)) for d in deliveries]
        run_many(conn, PUT_DELIVERIES, rows)
    if batch.deletes:
        keys = [(payload_id,) for payload_id in batch.deletes]
        run_many(conn, DELETE_PAYLOADS, keys)
        run_many(conn, DELETE_DELIVERIES, keys)
        delete_output(conn, batch.deletes)
    if batch.unmeta:
        run_many(conn, DELETE_META, [(key,) for key in batch.unmeta])
    if batch.meta:
        run_many(conn, PUT_META, list(batch.meta.items()))
