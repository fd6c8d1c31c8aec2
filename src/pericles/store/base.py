"""The store: what every backend shares, and the hooks a backend implements to persist.

A store keeps records and their output; it never decides a transition (the service does).
Its rules live here, once, for every backend:

- the record index: ids are unique, records are listed in creation order, queries filter
  and page (`model.ListQuery`) through indexes of state and labels (`store.index`), so a
  page costs what it returns, not what is kept; every record is held in memory, so reads
  never wait on a backend;
- output: each payload's `OutputLog` (head, tail, offsets, dropped bytes) is kept in memory
  while the payload runs; a backend that persists output is handed it now and then while it
  runs (`CHECKPOINT_SECONDS`) and for good with the terminal record, after which the backend
  may let the memory go (`_release_output`) and reads come back through `_load_output`.

- deliveries: each payload's callback deliveries (`model.Delivery`), kept with it and
  forgotten with it; the service decides what to send and when, the store only keeps them.

A backend only persists (the `_`-prefixed hooks): records, output snapshots, deliveries,
deletions and meta values. `MemoryStore` persists nothing; `SqliteStore` writes to a file.
"""

from __future__ import annotations

import asyncio
import builtins
import collections

from pericles.errors import PayloadNotFound, StaleRecord, StoreUnavailable
from pericles.model import STREAMS, Delivery, ListQuery, Page, Payload, Piece, Status
from pericles.store.index import RecordIndex
from pericles.store.output import OutputLog

#: Seconds between saves of running payloads' output: what a crash may lose of it.
CHECKPOINT_SECONDS = 1.0
#: Logs read back from a backend kept in memory for readers that come back.
_RESTORED_CACHE = 32
#: Meta key prefix of a payload whose process may have been started (`mark_starting`).
_STARTING = "starting:"


class Store:
    #: Whether the backend keeps output beyond memory: then it gets checkpoints and may
    #: release the memory of ended payloads' logs.
    persists_output = False

    def __init__(self, max_output: int) -> None:
        self._max_output = max_output
        # Creation order, and which records are in each state or carry each label.
        self._records = RecordIndex()
        # Only payloads that wrote something get a log, so a silent payload costs none.
        self._output: dict[str, OutputLog] = {}
        self._meta: dict[str, str] = {}
        #: Records not ended when the store was opened: their output may only be persisted.
        self._left_running: set[str] = set()
        self._restored: collections.OrderedDict[str, OutputLog] = collections.OrderedDict()
        #: Running payloads that wrote output since the last checkpoint.
        self._unsaved: set[str] = set()
        self._checkpoint_timer: asyncio.TimerHandle | None = None
        #: Each payload's callback deliveries, by delivery id in creation order.
        self._deliveries: dict[str, dict[str, Delivery]] = {}

    # -- opening and closing ------------------------------------------------------------

    async def open(self) -> None:
        """Make the store ready (open files, load what it keeps); raises `StoreUnavailable`."""
        records, meta = await self._load()
        self._records = RecordIndex()
        for record in records:
            self._records.add(record)
        self._left_running = {r.id for r in records if not r.terminal}
        self._meta = dict(meta)
        self._deliveries = {}
        for delivery in await self._load_deliveries():
            if delivery.payload_id in self._records:
                self._deliveries.setdefault(delivery.payload_id, {})[delivery.id] = delivery

    async def close(self) -> None:
        """Persist what is waiting, then release what the store holds open."""
        if self._checkpoint_timer is not None:
            self._checkpoint_timer.cancel()
            self._checkpoint_timer = None
        await self._close()

    async def ping(self) -> None:
        """Raise unless the store can be read and written now."""
        await self._ping()

    # -- records ------------------------------------------------------------------------

    async def add(self, record: Payload) -> None:
        """Keep a new record; its id must not be known yet. Returns once it is persisted."""
        if record.id in self._records:
            raise ValueError(f"payload {record.id} already stored")
        self._records.add(record)
        try:
            await self._persist_new(record)
        except StoreUnavailable:
            # Not persisted: forget it here too. (A cancelled wait leaves it: it is written.)
            self._records.pop(record.id)
            raise

    async def put(self, record: Payload, before: Status | None = None) -> None:
        """Replace the record with the same id; raises `PayloadNotFound`.

        With `before`, only while the stored record is still in that state (compare and set):
        raises `StaleRecord` otherwise, when another process (a worker, a reaper) moved it.
        """
        current = self._records.get(record.id)
        if current is None:
            raise PayloadNotFound(record.id)
        if before is not None and current.state is not before:
            raise StaleRecord(record.id, current.status, record.status)
        self._records.replace(record)
        if record.state is not Status.PENDING:
            self._unmark(record.id)
        final: OutputLog | None = None
        if record.terminal:
            # An ended payload's output never changes again: persisted with its record.
            self._left_running.discard(record.id)
            self._unsaved.discard(record.id)
            final = self._output.get(record.id)
        self._persist(record, final)

    async def claim(self, payload_id: str, owner: str) -> bool:
        """Make a pending payload `owner`'s to start, unless another owner has it: the start
        guard of stores shared by many processes (`RedisStore`). True when `owner` has it."""
        raise NotImplementedError(f"{type(self).__name__} is not shared between processes")

    async def get(self, payload_id: str) -> Payload:
        """The record with this id; raises `PayloadNotFound`."""
        record = self._records.get(payload_id)
        if record is None:
            raise PayloadNotFound(payload_id)
        return record

    async def list(self) -> builtins.list[Payload]:
        """Every record, oldest first."""
        return builtins.list(self._records.values())

    async def query(self, query: ListQuery) -> Page:
        """The records a query asks for, in creation order (or reversed); raises
        `PayloadNotFound` when `query.after` names no record."""
        if query.after is not None and query.after not in self._records:
            raise PayloadNotFound(query.after)
        found, more = self._records.page_of(query)
        return Page(found, more)

    @property
    def touched(self) -> int:
        """How many records the last `query` looked at: what its cost grows with."""
        return self._records.touched

    async def delete(self, payload_id: str) -> None:
        """Forget a record and its output; raises `PayloadNotFound`."""
        if self._records.pop(payload_id) is None:
            raise PayloadNotFound(payload_id)
        self._output.pop(payload_id, None)
        self._restored.pop(payload_id, None)
        self._unsaved.discard(payload_id)
        self._left_running.discard(payload_id)
        self._deliveries.pop(payload_id, None)
        self._unmark(payload_id)
        self._persist_delete(payload_id)

    async def get_meta(self, key: str) -> str | None:
        """A value the server noted for its next start (e.g. the boot it ran in)."""
        return self._meta.get(key)

    async def set_meta(self, key: str, value: str) -> None:
        """Note a value for the next start; a store that keeps nothing forgets it then."""
        self._meta[key] = value
        await self._persist_meta(key, value)

    # -- callback deliveries ----------------------------------------------------------------

    async def put_delivery(self, delivery: Delivery) -> None:
        """Keep a delivery, new or changed (persisted behind); raises `PayloadNotFound`."""
        if delivery.payload_id not in self._records:
            raise PayloadNotFound(delivery.payload_id)
        self._deliveries.setdefault(delivery.payload_id, {})[delivery.id] = delivery
        self._persist_delivery(delivery)

    async def deliveries(self, payload_id: str) -> builtins.list[Delivery]:
        """A payload's deliveries, oldest first; raises `PayloadNotFound`."""
        if payload_id not in self._records:
            raise PayloadNotFound(payload_id)
        return builtins.list(self._deliveries.get(payload_id, {}).values())

    async def unfinished_deliveries(self) -> builtins.list[Delivery]:
        """Every delivery still to be sent (or sent again), across payloads."""
        return [d for kept in self._deliveries.values() for d in kept.values() if not d.done]

    async def mark_starting(self, payload_id: str) -> None:
        """Note durably, before its process is started, that this pending payload may run.

        A store that keeps records across restarts has it on disk when this returns: the
        next server then never starts the payload again (at most once). The note goes with
        the payload's next stored record (working, or an end), in the same write. Raises
        `StoreUnavailable`.
        """
        await self.set_meta(_STARTING + payload_id, "1")

    async def starting(self) -> set[str]:
        """Payloads noted by `mark_starting` whose next record was never stored."""
        return {key[len(_STARTING) :] for key in self._meta if key.startswith(_STARTING)}

    def _unmark(self, payload_id: str) -> None:
        key = _STARTING + payload_id
        if self._meta.pop(key, None) is not None:
            self._forget_meta(key)

    # -- output -------------------------------------------------------------------------

    async def append_output(self, payload_id: str, stream: str, data: bytes) -> tuple[int, int]:
        """Add bytes a payload wrote to `stream` ("stdout" or "stderr").

        Returns the stream's total bytes written so far and how many of them were dropped.
        """
        log = self._output.get(payload_id)
        if log is None:
            log = self._output[payload_id] = OutputLog(self._max_output)
        log.append(stream, data)
        if self.persists_output:
            # Saved now and then while it runs, so a payload lost in a crash keeps most of it.
            self._unsaved.add(payload_id)
            if self._checkpoint_timer is None:
                self._checkpoint_timer = asyncio.get_running_loop().call_later(
                    CHECKPOINT_SECONDS, self._checkpoint
                )
        return log.streams[stream].total, log.streams[stream].dropped

    def _checkpoint(self) -> None:
        self._checkpoint_timer = None
        running = {}
        for payload_id in self._unsaved:
            output = self._output.get(payload_id)
            record = self._records.get(payload_id)
            if output is not None and record is not None and not record.terminal:
                running[payload_id] = output
        self._unsaved.clear()
        self._persist_running_output(running)

    async def read_output(self, payload_id: str, stream: str, offset: int) -> tuple[bytes, int]:
        """Kept bytes from `offset` on, and how many in that range were dropped.

        `stream` is "stdout", "stderr", or "both": the two interleaved in the order they were
        read, with `offset` counted in the combined output.
        """
        log = await self._log(payload_id)
        if log is None:
            return b"", 0
        if stream == "both":
            return log.read_both(offset)
        return log.read(stream, offset)

    async def output_pieces(
        self, payload_id: str, positions: dict[str, int]
    ) -> builtins.list[Piece]:
        """Kept bytes of each stream named in `positions` from its offset, in read order."""
        log = await self._log(payload_id)
        return [] if log is None else log.pieces(positions)

    async def output_positions(self, payload_id: str, offset: int) -> dict[str, int]:
        """Where each stream stands at `offset` of the combined output."""
        log = await self._log(payload_id)
        if log is None:
            return dict.fromkeys(STREAMS, 0)
        return log.positions_at(offset)

    async def _log(self, payload_id: str) -> OutputLog | None:
        """The payload's output log, None when it wrote nothing; raises `PayloadNotFound`."""
        record = self._records.get(payload_id)
        if record is None:
            raise PayloadNotFound(payload_id)
        live = self._output.get(payload_id)
        if live is not None or not self.persists_output:
            return live
        if not record.terminal and payload_id not in self._left_running:
            return None  # running here, and silent so far: it has no log yet
        # An ended record's counts are final: none means nothing persisted. One an earlier
        # server left running has counts from its last transition only: read what was saved.
        if record.terminal and not record.stdout_bytes and not record.stderr_bytes:
            return None
        cached = self._restored.get(payload_id)
        if cached is not None:
            self._restored.move_to_end(payload_id)
            return cached
        # Only ended payloads' logs leave memory, and only once persisted.
        restored = await self._load_output(payload_id)
        if restored is None or payload_id not in self._records:  # deleted while we read
            return None
        self._restored[payload_id] = restored
        if len(self._restored) > _RESTORED_CACHE:
            self._restored.popitem(last=False)
        return restored

    def _release_output(self, payload_id: str, log: OutputLog) -> None:
        """For a backend: `log`, an ended payload's, is persisted; its memory may go."""
        if self._output.get(payload_id) is log:
            del self._output[payload_id]

    # -- what a backend implements: persistence only -------------------------------------

    async def _load(self) -> tuple[builtins.list[Payload], dict[str, str]]:
        """Every persisted record, oldest first, and the meta values."""
        return [], {}

    async def _persist_new(self, record: Payload) -> None:
        """Persist a new record before returning; raises `StoreUnavailable`."""

    def _persist(self, record: Payload, final_output: OutputLog | None) -> None:
        """Persist a changed record (may be written behind), with its final output if ended."""

    def _persist_running_output(self, logs: dict[str, OutputLog]) -> None:
        """Persist running payloads' output so far (a checkpoint)."""

    def _persist_delete(self, payload_id: str) -> None:
        """Forget a record and its output."""

    async def _persist_meta(self, key: str, value: str) -> None:
        """Persist a meta value before returning."""

    async def _load_deliveries(self) -> builtins.list[Delivery]:
        """Every persisted delivery (called by `open`, after `_load`)."""
        return []

    def _persist_delivery(self, delivery: Delivery) -> None:
        """Persist a new or changed delivery (may be written behind); deleted with its record."""

    def _forget_meta(self, key: str) -> None:
        """Remove a meta value, persisted with the next record change (may be written behind)."""

    async def _load_output(self, payload_id: str) -> OutputLog | None:
        """A persisted payload's output log, or None."""
        return None

    async def _ping(self) -> None:
        """Raise unless the backend can be read and written now."""

    async def _close(self) -> None:
        """Persist what is waiting, then release what the backend holds open."""
