"""The Redis store: records and output shared by API replicas and workers on many hosts.

Layout (per-payload keys share the hash tag `{id}`, so a payload's keys stay in one slot):

- `pericles:{id}`: a hash with the record (`rec`, JSON), its `state`, wire `status`, creation
  `seq`, the `worker` running it, `starting` once a local runner is about to start it
  (`mark_starting`), and per stream the output's `total`, head end and tail start.
- `pericles:{id}:out:stdout`, `...:out:stderr`: one stream entry per chunk the payload wrote,
  entry id `<offset>-1` (its offset in its stream), fields `c` (offset in the combined output)
  and `d` (the bytes). Entries wholly inside the dropped middle are deleted as the tail moves.
- `pericles:all`, `pericles:state:<state>`: sorted sets of ids by `seq`, for lists.
- `pericles:deadlines`: the liveness deadline (ms, Redis clock) of each working payload.
- `pericles:ended`: when each ended payload ended (µs, Redis clock), for retention (`EVICT`).
- `pericles:{id}:deliveries`, `pericles:deliveries:unfinished`: callback deliveries
  (`store/redis_deliveries.py`). Key names live in `store/redis_keys.py`.

Every status change runs the `MOVE` script (compare and set on the state before, checked
against the model's transition table). Output bytes are kept by the same head-and-tail rule
as every store: the one process writing a payload's output (its runner) keeps the
`OutputLog` accounting and sends Redis the entries to add and delete; readers rebuild the
part of the log they need from the entries.
"""

from __future__ import annotations

import asyncio
import builtins
import dataclasses
import logging
from collections import deque
from collections.abc import AsyncIterator, Iterable
from typing import Any

import redis.asyncio as aioredis
from pydantic import TypeAdapter
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from pericles.errors import PayloadNotFound, StaleRecord, StoreUnavailable
from pericles.model import STREAMS, ListQuery, Page, Payload, Piece, Status
from pericles.store import redis_lua
from pericles.store.base import Store
from pericles.store.output import OutputLog
from pericles.store.redis_deliveries import RedisDeliveries
from pericles.store.redis_keys import (
    ALL,
    CHANGES,
    DEADLINES,
    ENDED,
    META,
    PREFIX,
    SEQ,
    STATE_KEYS,
    cancel_key,
    deliveries_key,
    output_key,
    record_key,
    state_key,
)
from pericles.store.snapshot import ChunkRow, restore

log = logging.getLogger("pericles.store")

_RECORDS = TypeAdapter(Payload)
_BATCH = 256
#: Seconds a stop request is kept for a worker that missed the message.
_STOP_TTL = 24 * 3600


def _cancelling() -> bool:
    """Whether this task is being cancelled: a cancel that reached redis-py in the middle of
    a read can come out as a connection error, and a loop that subscribes again on errors
    would then never end (a shutdown waiting on it, neither)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


@dataclasses.dataclass
class _Writer:
    """What the one process writing a payload's output keeps: the log's accounting, and the
    stream entries past the head that the moving tail will drop, as (entry id, end offset)."""

    log: OutputLog
    deletable: dict[str, deque[tuple[str, int]]] = dataclasses.field(
        default_factory=lambda: {name: deque() for name in STREAMS}
    )


@dataclasses.dataclass(frozen=True, slots=True)
class _Kept:
    """Where a stream's kept bytes lie: [0, head) and [tail, total)."""

    total: int
    head: int
    tail: int

    @property
    def dropped(self) -> int:
        return self.tail - self.head


def _int(value: bytes | None) -> int:
    return int(value) if value is not None else 0


_OUT_FIELDS = [f"o:{s}:{part}" for s in STREAMS for part in ("total", "head", "tail")]
#: What a read of a record fetches: the record, its claimant, its output's extent.
_FIELDS = ["rec", "worker", *_OUT_FIELDS]


def _kept(values: list[bytes | None]) -> dict[str, _Kept]:
    """Per stream, from HMGET of `_OUT_FIELDS`."""
    return {
        name: _Kept(*(_int(v) for v in values[3 * i : 3 * i + 3])) for i, name in enumerate(STREAMS)
    }


def _clip(stream: str, entry_id: bytes, fields: dict[bytes, bytes], kept: _Kept) -> list[ChunkRow]:
    """An entry's bytes that are still kept, as (stream, part, offset, coff, data) rows."""
    start = int(entry_id.split(b"-")[0])
    coff = int(fields[b"c"])
    data = fields[b"d"]
    end = start + len(data)
    rows: list[ChunkRow] = []
    if start < kept.head:
        rows.append((stream, 0, start, coff, data[: min(end, kept.head) - start]))
    from_ = max(start, kept.tail)
    if end > from_:
        rows.append((stream, 1, from_, coff + from_ - start, data[from_ - start :]))
    return rows


#: A change heard: kind ("s" record, "o" output, "*" reconnected), payload id, the record as
#: written (None: deleted, or output), the state before the write (None: new, or unknown).
Change = tuple[str, str, Payload | None, Status | None]


def _change(data: bytes) -> Change:
    head, _, body = data.partition(b"\n")
    text = head.decode()
    payload_id, _, before = text[1:].partition(" ")
    record = _RECORDS.validate_json(body) if body else None
    return text[0], payload_id, record, Status(before) if before else None


class RedisStore(RedisDeliveries, Store):
    """A shared store: unlike the other backends, it keeps no record index in memory (other
    processes change records at any time); every public method reads and writes Redis. The
    output's head-and-tail accounting is the shared `OutputLog`'s."""

    def __init__(self, url: str, max_output: int) -> None:
        super().__init__(max_output)
        self._url = url
        # redis-py types each command as a union of its sync and async forms: to mypy every
        # call here would need a cast, so the client is typed loosely in this module only.
        # Many readers (SSE followers) share a bounded pool: past it, a read waits its turn
        # instead of failing with "Too many connections".
        # A dropped connection (Redis restarted, a failover) is retried on a new one.
        pool = aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=64,
            timeout=30,
            retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=6),
            retry_on_error=[RedisConnectionError, RedisTimeoutError],
            health_check_interval=15,
        )
        self._redis: Any = aioredis.Redis(connection_pool=pool)
        self._add = self._redis.register_script(redis_lua.ADD)
        self._move = self._redis.register_script(redis_lua.MOVE)
        self._append = self._redis.register_script(redis_lua.APPEND)
        self._renew = self._redis.register_script(redis_lua.RENEW)
        self._claim = self._redis.register_script(redis_lua.CLAIM)
        self._expired = self._redis.register_script(redis_lua.EXPIRED)
        self._evict = self._redis.register_script(redis_lua.EVICT)
        self._claim_event = self._redis.register_script(redis_lua.CLAIM_EVENT)
        self._writers: dict[str, _Writer] = {}
        #: Payloads this process claimed (`claim`) and that have not ended.
        self._claimed: set[str] = set()
        #: Liveness TTL in ms armed on every move into a live state (the runner sets it).
        self.ttl_ms = 5000
        #: The host set a claim notes its payload in (a worker sets it, see `note_host`).
        self.host_key: str | None = None

    @property
    def redis(self) -> aioredis.Redis:
        client: aioredis.Redis = self._redis
        return client

    async def open(self) -> None:
        try:
            await self._redis.ping()
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"cannot reach Redis at {self._url}: {exc}") from exc

    async def ping(self) -> None:
        await self._redis.ping()

    async def close(self) -> None:
        await self._redis.aclose(close_connection_pool=True)

    # -- records --------------------------------------------------------------------------

    async def add(self, record: Payload, queued: tuple[str, str] | None = None) -> None:
        """`Store.add`; with `queued` (a broker list and a message), the message is pushed
        on that list in the same step (see `CeleryRunner.message`)."""
        keys = [record_key(record.id), SEQ, ALL, state_key(record.state)]
        args = [record.id, record.state.value, record.status, _RECORDS.dump_json(record), CHANGES]
        if queued is not None:
            keys.append(queued[0])
            args.append(queued[1])
        added = await self._add(keys=keys, args=args)
        if not added:
            raise ValueError(f"payload {record.id} already stored")

    async def put(self, record: Payload, before: Status | None = None) -> None:
        await self._put(record, before, if_expired=False)

    async def put_if_expired(self, record: Payload, before: Status) -> bool:
        """`put`, only while the record's liveness deadline has passed; False when it was
        renewed meanwhile (its worker is alive after all)."""
        return await self._put(record, before, if_expired=True)

    async def _put(self, record: Payload, before: Status | None, if_expired: bool) -> bool:
        result = await self._move(
            keys=[record_key(record.id), DEADLINES, *STATE_KEYS, ENDED],
            args=[
                record.id,
                before.value if before is not None else "",
                record.state.value,
                record.status,
                _RECORDS.dump_json(record),
                self.ttl_ms,
                "1" if if_expired else "0",
                CHANGES,
                record.worker or "",
            ],
        )
        outcome = result[0]
        if outcome == b"gone":
            raise PayloadNotFound(record.id)
        if outcome == b"stale":
            raise StaleRecord(record.id, result[2].decode(), record.status)
        if record.terminal:
            self._writers.pop(record.id, None)
            self._claimed.discard(record.id)
        return bool(outcome == b"ok")

    async def claim(self, payload_id: str, owner: str) -> bool:
        """The start guard (one script): a pending payload no one claimed becomes `owner`'s,
        with a liveness deadline, and is noted in `host_key`'s set when there is one (before
        anything is spawned, in the same step: one round trip fewer per payload)."""
        keys = [record_key(payload_id), DEADLINES]
        if self.host_key is not None:
            keys.append(self.host_key)
        claimed = bool(await self._claim(keys=keys, args=[payload_id, owner, self.ttl_ms]))
        if claimed:
            self._claimed.add(payload_id)
        return claimed

    async def mark_starting(self, payload_id: str) -> None:
        """`Store.mark_starting`. A payload this process claimed is noted already: its claim
        is durable, and a claimant that stops renewing it leaves it to a reaper, which records
        it lost, never started again; so no write. Any other (the local runner over Redis) is
        noted on its record, which `starting` reads back in the next process."""
        if payload_id in self._claimed:
            return
        await self._redis.hset(record_key(payload_id), "starting", b"1")

    async def starting(self) -> set[str]:
        """Pending payloads noted by `mark_starting` (a record that moved on is not pending)."""
        found: set[str] = set()
        bound = "-inf"
        while True:
            ids, bound = await self._ids(state_key(Status.PENDING), bound, False)
            async with self._redis.pipeline(transaction=False) as pipe:
                for payload_id in ids:
                    pipe.hget(record_key(payload_id), "starting")
                notes = await pipe.execute()
            found.update(i for i, note in zip(ids, notes, strict=True) if note is not None)
            if len(ids) < _BATCH:
                return found

    async def get(self, payload_id: str) -> Payload:
        values = await self._redis.hmget(record_key(payload_id), _FIELDS)
        if values[0] is None:
            raise PayloadNotFound(payload_id)
        return self._decode(values)

    def _decode(self, values: list[bytes | None]) -> Payload:
        """A record from HMGET of `_FIELDS`, with its claimant and output counts laid over."""
        assert values[0] is not None
        record = _RECORDS.validate_json(values[0])
        counts: dict[str, Any] = {}
        if values[1] is not None and record.worker is None:
            counts["worker"] = values[1].decode()
        for name, kept in _kept(values[2:]).items():
            if kept.total:
                counts[f"{name}_bytes"] = kept.total
                counts[f"{name}_dropped"] = kept.dropped
        return dataclasses.replace(record, **counts) if counts else record

    async def list(self) -> builtins.list[Payload]:
        return (await self.query(ListQuery())).records

    async def query(self, query: ListQuery) -> Page:
        index = ALL
        if len(query.statuses) == 1:
            index = state_key(next(iter(query.statuses)))
        bound = "-inf" if not query.descending else "+inf"
        if query.after is not None:
            seq = await self._redis.hget(record_key(query.after), "seq")
            if seq is None:
                raise PayloadNotFound(query.after)
            bound = f"({int(seq)}"
        found: builtins.list[Payload] = []
        while True:
            ids, bound = await self._ids(index, bound, query.descending)
            for record in await self._fetch(ids):
                if not query.matches(record):
                    continue
                if query.limit is not None and len(found) == query.limit:
                    return Page(found, more=True)
                found.append(record)
            if len(ids) < _BATCH:
                return Page(found, more=False)

    async def _ids(
        self, index: str, bound: str, descending: bool
    ) -> tuple[builtins.list[str], str]:
        """The next batch of ids after `bound` in index order, and the bound after them."""
        if descending:
            rows = await self._redis.zrevrangebyscore(
                index, bound, "-inf", start=0, num=_BATCH, withscores=True
            )
        else:
            rows = await self._redis.zrangebyscore(
                index, bound, "+inf", start=0, num=_BATCH, withscores=True
            )
        ids = [member.decode() for member, _ in rows]
        return ids, (f"({int(rows[-1][1])}" if rows else bound)

    async def _fetch(self, ids: Iterable[str]) -> builtins.list[Payload]:
        async with self._redis.pipeline(transaction=False) as pipe:
            for payload_id in ids:
                pipe.hmget(record_key(payload_id), _FIELDS)
            rows = await pipe.execute()
        # A record deleted between the index read and this one is passed over.
        return [self._decode(values) for values in rows if values[0] is not None]

    async def delete(self, payload_id: str) -> None:
        self._writers.pop(payload_id, None)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(record_key(payload_id))
            pipe.delete(
                *(output_key(payload_id, s) for s in STREAMS),
                cancel_key(payload_id),
                deliveries_key(payload_id),
            )
            for index in (ALL, DEADLINES, ENDED, *STATE_KEYS):
                pipe.zrem(index, payload_id)
            pipe.publish(CHANGES, "s" + payload_id)
            removed = await pipe.execute()
        if not removed[0]:
            raise PayloadNotFound(payload_id)

    async def get_meta(self, key: str) -> str | None:
        value = await self._redis.hget(META, key)
        return value.decode() if value is not None else None

    async def set_meta(self, key: str, value: str) -> None:
        await self._redis.hset(META, key, value)

    # -- output ---------------------------------------------------------------------------

    async def append_output(self, payload_id: str, stream: str, data: bytes) -> tuple[int, int]:
        writer = self._writers.get(payload_id)
        if writer is None:
            writer = self._writers[payload_id] = _Writer(OutputLog(self._max_output))
        log_ = writer.log
        log_.append(stream, data)
        kept = log_.streams[stream]
        total, head, tail = kept.total, kept.head_bytes, kept.total - kept.tail_bytes
        offset, coff = total - len(data), log_.total - len(data)
        first = offset if offset < head else max(offset, tail)
        entry = f"{first}-1" if first < total else ""
        deletable = writer.deletable[stream]
        if entry and first >= head:
            deletable.append((entry, total))
        gone: builtins.list[str] = []
        while deletable and deletable[0][1] <= tail:
            gone.append(deletable.popleft()[0])
        written = await self._append(
            keys=[record_key(payload_id), output_key(payload_id, stream)],
            args=[
                payload_id,
                stream,
                entry,
                coff + first - offset,
                data[first - offset :],
                total,
                head,
                tail,
                log_.total,
                CHANGES,
                *gone,
            ],
        )
        if written != 1:  # ended (lost) or deleted meanwhile: nothing more is kept
            self._writers.pop(payload_id, None)
        return total, tail - head

    async def _read_log(self, payload_id: str, positions: dict[str, int] | None) -> OutputLog:
        """The kept output, rebuilt from the entries at or after `positions` (all: None)."""
        streams = STREAMS if positions is None else tuple(positions)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hmget(record_key(payload_id), ["state", *_OUT_FIELDS])
            for name in streams:
                key = output_key(payload_id, name)
                if positions is None:
                    pipe.xrange(key, "-", "+")
                else:
                    at = positions[name]
                    pipe.xrevrange(key, f"{at}-1", "-", count=1)
                    pipe.xrange(key, f"({at}-1", "+")
            results = await pipe.execute()
        if results[0][0] is None:
            raise PayloadNotFound(payload_id)
        kept = _kept(results[0][1:])
        entries: dict[str, builtins.list[tuple[bytes, dict[bytes, bytes]]]] = {}
        rest = iter(results[1:])
        for name in streams:
            entries[name] = next(rest) if positions is None else [*next(rest), *next(rest)]
        rows = [
            row
            for name in streams
            for entry_id, fields in entries[name]
            for row in _clip(name, entry_id, fields, kept[name])
        ]
        return restore(self._max_output, rows, [(n, k.total) for n, k in kept.items()])

    async def read_output(self, payload_id: str, stream: str, offset: int) -> tuple[bytes, int]:
        if stream == "both":
            return (await self._read_log(payload_id, None)).read_both(offset)
        return (await self._read_log(payload_id, {stream: offset})).read(stream, offset)

    async def output_pieces(
        self, payload_id: str, positions: dict[str, int]
    ) -> builtins.list[Piece]:
        return (await self._read_log(payload_id, dict(positions))).pieces(positions)

    async def output_positions(self, payload_id: str, offset: int) -> dict[str, int]:
        return (await self._read_log(payload_id, None)).positions_at(offset)

    # -- liveness and changes: what the celery runner and the reaper use ------------------

    async def renew(self, payload_ids: Iterable[str], worker: str) -> dict[str, tuple[str, bool]]:
        """Re-arm the deadlines of the live payloads `worker` runs; per id, its state (''
        when gone) and whether a stop was asked for it."""
        ids = builtins.list(payload_ids)
        async with self._redis.pipeline(transaction=False) as pipe:
            for payload_id in ids:
                await self._renew(
                    keys=[record_key(payload_id), DEADLINES, cancel_key(payload_id)],
                    args=[payload_id, worker, self.ttl_ms],
                    client=pipe,
                )
            results = await pipe.execute()
        return {i: (r[0].decode(), bool(r[2])) for i, r in zip(ids, results, strict=True)}

    async def expired(self) -> builtins.list[str]:
        """Ids of live payloads whose deadline has passed: their worker stopped renewing."""
        ids = await self._expired(keys=[DEADLINES])
        return [i.decode() for i in ids]

    async def request_stop(self, payload_id: str) -> None:
        """Flag a payload to stop: its worker reads the flag with every renewal."""
        await self._redis.set(cancel_key(payload_id), b"1", ex=_STOP_TTL)

    async def note_host(self, key: str, payload_id: str) -> None:
        """Note a payload in a host's set (what the host janitor looks through); `claim`
        does it for `host_key`."""
        await self._redis.sadd(key, payload_id)

    async def forget_host(self, key: str, payload_id: str) -> None:
        await self._redis.srem(key, payload_id)

    async def host_payloads(self, key: str) -> builtins.list[str]:
        return [member.decode() for member in await self._redis.smembers(key)]

    async def evict_ended(self, keep: int, keep_for: float | None) -> int:
        """Forget ended payloads past `keep` of them or older than `keep_for` seconds, oldest
        first, as `delete` does; how many. Safe to run from several processes at once."""
        evicted = 0
        while True:
            count = int(
                await self._evict(
                    keys=[ENDED, ALL, DEADLINES, *STATE_KEYS],
                    args=[keep, "" if keep_for is None else keep_for, CHANGES, PREFIX, _BATCH],
                )
            )
            evicted += count
            if count < _BATCH:
                return evicted

    async def count(self, state: Status) -> int:
        return int(await self._redis.zcard(state_key(state)))

    async def changes(self) -> AsyncIterator[Change]:
        """Every change from now on, from any process: ("s", id, record as written, or None
        when deleted, the state before) for a record, ("o", id, None, None) for output. On a
        lost connection it yields ("*", "", None, None) once reconnected: anything may have
        changed meanwhile."""
        lost = False
        while True:
            try:
                async with self._redis.pubsub() as pubsub:
                    await pubsub.subscribe(CHANGES)
                    if lost:
                        yield "*", "", None, None
                    async for message in pubsub.listen():
                        if message["type"] == "message":
                            yield _change(message["data"])
            except (RedisError, OSError) as exc:
                if _cancelling():
                    raise asyncio.CancelledError from exc
                log.warning("store: lost the change feed (%s); subscribing again", exc)
                lost = True
                await asyncio.sleep(0.5)
