"""The Redis store against a real redis-server: it keeps what the memory store keeps, and its
compare-and-set steps let exactly one of many racing processes win."""

from __future__ import annotations

import asyncio
import dataclasses
import random
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pericles.errors import PayloadNotFound, StaleRecord
from pericles.model import ListQuery, Payload, PayloadSpec, Piece, Status, new_id, utcnow
from pericles.store.base import Store
from pericles.store.memory import MemoryStore
from pericles.store.redis import RedisStore
from pericles.store.redis_keys import output_key
from tests.cluster import RedisServer

STORES = ("memory",)


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    try:
        yield server.url()
    finally:
        server.stop()


def _record(**fields: object) -> Payload:
    spec = PayloadSpec.model_validate({"cmd": "/bin/true", **fields})
    return Payload.from_spec(spec, new_id(), utcnow())


def _merged(pieces: list[Piece]) -> list[tuple[str, int, int, bytes]]:
    """Pieces with neighbours of one stream joined: stores may cut the same bytes apart
    differently (the memory log joins writes in place, Redis keeps one entry per write)."""
    out: list[tuple[str, int, int, bytes]] = []
    for p in pieces:
        if out and out[-1][0] == p.stream and out[-1][1] + len(out[-1][3]) == p.offset:
            last = out[-1]
            out[-1] = (last[0], last[1], last[2], last[3] + p.data)
        else:
            out.append((p.stream, p.offset, p.coff, p.data))
    return out


writes = st.lists(
    st.tuples(st.sampled_from(["stdout", "stderr"]), st.integers(1, 300)), max_size=60
)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(limit=st.sampled_from([0, 1, 64, 500, 4096]), chunks=writes, seed=st.integers(0, 99))
def test_output_reads_as_the_memory_store_reads_it(
    redis_url: str, limit: int, chunks: list[tuple[str, int]], seed: int
) -> None:
    async def run() -> None:
        redis, memory = RedisStore(redis_url, limit), MemoryStore(limit)
        await redis.open()
        record = _record()
        stores: tuple[Store, Store] = (redis, memory)
        for store in stores:
            await store.add(record)
        rnd = random.Random(seed)
        for i, (stream, size) in enumerate(chunks):
            data = bytes([97 + i % 26]) * size
            assert await redis.append_output(record.id, stream, data) == (
                await memory.append_output(record.id, stream, data)
            )
        ends = {s: sum(n for name, n in chunks if name == s) for s in ("stdout", "stderr")}
        for stream in ("stdout", "stderr", "both"):
            top = sum(ends.values()) if stream == "both" else ends[stream]
            for offset in {0, rnd.randint(0, top + 1), top}:
                assert await redis.read_output(record.id, stream, offset) == (
                    await memory.read_output(record.id, stream, offset)
                )
                assert await redis.output_positions(record.id, offset) == (
                    await memory.output_positions(record.id, offset)
                )
        positions = {s: rnd.randint(0, ends[s]) for s in ("stdout", "stderr")}
        assert _merged(await redis.output_pieces(record.id, dict(positions))) == _merged(
            await memory.output_pieces(record.id, dict(positions))
        )
        got = await redis.get(record.id)
        want = await memory.get(record.id)
        assert (got.stdout_bytes, got.stderr_bytes) == tuple(ends.values())
        assert got.status == want.status
        await redis.delete(record.id)
        await redis.close()

    asyncio.run(run())


def test_many_claimers_and_movers_race_and_exactly_one_wins(redis_url: str) -> None:
    """3,000 racing claims (three workers per payload), then 2,000 racing ends."""

    async def run() -> tuple[list[int], int]:
        stores = [RedisStore(redis_url, 1024) for _ in range(3)]
        for store in stores:
            await store.open()
        records = [_record() for _ in range(1000)]
        for record in records:
            await stores[0].add(record)
        claims = await asyncio.gather(
            *(s.claim(r.id, f"w{i}") for r in records for i, s in enumerate(stores))
        )
        winners = [claims[3 * n : 3 * n + 3] for n in range(len(records))]
        working = []
        for record, won in zip(records, winners, strict=True):
            mine = dataclasses.replace(record, status="working", worker=f"w{won.index(True)}")
            await stores[0].put(mine, Status.PENDING)
            working.append(mine)

        async def end(store: Store, record: Payload, status: Status) -> bool:
            try:
                await store.put(dataclasses.replace(record, status=status.value), Status.WORKING)
            except StaleRecord:
                return False
            return True

        ended = await asyncio.gather(
            *(
                end(stores[k], record, status)
                for record in working
                for k, status in enumerate([Status.CANCELLED, Status.FINISHED, Status.LOST])
            )
        )
        for store in stores:
            await store.close()
        return [sum(won) for won in winners], sum(ended)

    claims_won, ends = asyncio.run(run())
    assert claims_won == [1] * 1000
    assert ends == 1000


def test_lists_page_filter_and_order_as_the_memory_store_does(redis_url: str) -> None:
    async def run() -> None:
        redis, memory = RedisStore(redis_url.replace("/0", "/1"), 1024), MemoryStore(1024)
        await redis.open()
        await redis.redis.flushdb()
        records = [_record(labels={"n": str(i % 3)}) for i in range(40)]
        for i, record in enumerate(records):
            for store in (redis, memory):
                await store.add(record)
                if i % 4 == 0:
                    await store.put(dataclasses.replace(record, status="cancelled"), Status.PENDING)
        queries = [
            ListQuery(),
            ListQuery(limit=7),
            ListQuery(limit=7, after=records[10].id),
            ListQuery(descending=True, limit=5, after=records[30].id),
            ListQuery(statuses=frozenset({Status.CANCELLED})),
            ListQuery(statuses=frozenset({Status.PENDING, Status.CANCELLED}), limit=9),
            ListQuery(labels=(("n", "1"),), limit=4),
        ]
        for query in queries:
            got, want = await redis.query(query), await memory.query(query)
            assert [r.id for r in got.records] == [r.id for r in want.records], query
            assert got.more == want.more, query
        with pytest.raises(PayloadNotFound):
            await redis.query(ListQuery(after=new_id()))
        await redis.close()

    asyncio.run(run())


def test_replicas_evicting_at_once_forget_each_ended_payload_once(redis_url: str) -> None:
    """Three processes run retention together: each ended payload past the bound is
    evicted once, the newest ended ones and every payload not ended stay."""
    url = redis_url.rsplit("/", 1)[0] + "/5"  # a database of its own: counts are exact

    async def run() -> None:
        stores = [RedisStore(url, 1024) for _ in range(3)]
        for store in stores:
            await store.open()
        records = [_record() for _ in range(600)]
        for record in records:
            await stores[0].add(record)
        ended = records[:500]
        await stores[2].append_output(ended[0].id, "stdout", b"gone with it")
        for record in ended:
            await stores[1].put(dataclasses.replace(record, status="cancelled"), Status.PENDING)
        counts = await asyncio.gather(*(s.evict_ended(100, None) for s in stores * 3))
        assert sum(counts) == 400
        assert await stores[0].count(Status.CANCELLED) == 100
        assert await stores[0].count(Status.PENDING) == 100
        kept = {r.id for r in await stores[0].list()}
        assert kept == {r.id for r in records[400:]}  # the last 100 to end, and the pending
        with pytest.raises(PayloadNotFound):
            await stores[0].get(ended[0].id)
        assert not await stores[0].redis.exists(output_key(ended[0].id, "stdout"))
        # By age: every ended one goes (the bound is 1 ms), none of the pending ones.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        evicted = 0
        while evicted < 100 and loop.time() < deadline:
            counts = await asyncio.gather(*(s.evict_ended(10_000, 0.001) for s in stores))
            evicted += sum(counts)
        assert evicted == 100
        assert await stores[0].count(Status.CANCELLED) == 0
        assert await stores[0].count(Status.PENDING) == 100
        for store in stores:
            await store.close()

    asyncio.run(run())


def test_a_start_noted_by_one_process_is_read_back_by_the_next(redis_url: str) -> None:
    """`mark_starting` (the local runner over Redis) is durable: the next process finds the
    payload noted, until its record moves on. A payload this process claimed is noted by
    its claim, which also puts it in the host set, with no write of its own."""
    noted, plain, claimed = _record(), _record(), _record()
    host = f"pericles:host:test-{new_id()}"

    async def run() -> tuple[set[str], list[str], set[str]]:
        first, second = RedisStore(redis_url, 1024), RedisStore(redis_url, 1024)
        await first.open()
        await second.open()
        for record in (noted, plain, claimed):
            await first.add(record)
        await first.mark_starting(noted.id)
        first.host_key = host
        assert await first.claim(claimed.id, "w1")
        await first.mark_starting(claimed.id)
        starting = await second.starting()
        in_host = await second.host_payloads(host)
        await first.put(dataclasses.replace(noted, status="working"), Status.PENDING)
        after = await second.starting()
        await first.close()
        await second.close()
        return starting, in_host, after

    starting, in_host, after = asyncio.run(run())
    assert noted.id in starting
    assert plain.id not in starting
    assert claimed.id not in starting
    assert in_host == [claimed.id]
    assert noted.id not in after
