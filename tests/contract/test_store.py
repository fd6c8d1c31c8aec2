"""The `Store` interface, the same for every backend (`STORE_URLS` in conftest)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest

from pericles.errors import PayloadNotFound
from pericles.model import ListQuery, Payload, PayloadSpec, Status, new_id, utcnow
from pericles.store import Store
from tests.contract.conftest import StoreBackend

T = TypeVar("T")


def make_spec(**fields: Any) -> PayloadSpec:
    return PayloadSpec.model_validate(fields)


def record(cmd: str = "/bin/true", **labels: str) -> Payload:
    spec = make_spec(cmd=cmd, labels=labels or None)
    return Payload.from_spec(spec, new_id(), utcnow())


def ended(kept: Payload, stdout_bytes: int = 0) -> Payload:
    return dataclasses.replace(
        kept, status=Status.FINISHED.value, exit_code=0, stdout_bytes=stdout_bytes
    )


def with_store(
    backend: StoreBackend, body: Callable[[Store], Awaitable[T]], limit: int = 1024
) -> T:
    async def run() -> T:
        store = backend.new(limit)
        await store.open()
        try:
            return await body(store)
        finally:
            await store.close()

    return asyncio.run(run())


def test_records_are_kept_by_id_in_creation_order(backend: StoreBackend) -> None:
    first, second = record(), record()

    async def body(store: Store) -> None:
        await store.add(first)
        await store.add(second)
        with pytest.raises(ValueError, match="already stored"):
            await store.add(first)
        assert await store.get(first.id) == first
        changed = dataclasses.replace(first, status="working", pid=42)
        await store.put(changed)
        assert await store.get(first.id) == changed
        assert [r.id for r in await store.list()] == [first.id, second.id]
        with pytest.raises(PayloadNotFound):
            await store.get(new_id())
        with pytest.raises(PayloadNotFound):
            await store.put(record())
        await store.delete(first.id)
        with pytest.raises(PayloadNotFound):
            await store.delete(first.id)
        assert [r.id for r in await store.list()] == [second.id]

    with_store(backend, body)


def test_queries_filter_and_page(backend: StoreBackend) -> None:
    records = [record(team="a" if i % 2 else "b") for i in range(7)]

    async def body(store: Store) -> None:
        for r in records:
            await store.add(r)
        await store.put(ended(records[0]))
        done = await store.query(ListQuery(statuses=frozenset({Status.FINISHED})))
        assert [r.id for r in done.records] == [records[0].id]
        team_a = await store.query(ListQuery(labels=(("team", "a"),)))
        assert [r.id for r in team_a.records] == [r.id for r in records[1::2]]
        page = await store.query(ListQuery(limit=3))
        assert ([r.id for r in page.records], page.more) == ([r.id for r in records[:3]], True)
        rest = await store.query(ListQuery(limit=10, after=page.records[-1].id))
        assert ([r.id for r in rest.records], rest.more) == ([r.id for r in records[3:]], False)
        newest = await store.query(ListQuery(limit=2, descending=True))
        assert [r.id for r in newest.records] == [records[6].id, records[5].id]
        with pytest.raises(PayloadNotFound):
            await store.query(ListQuery(after=new_id()))

    with_store(backend, body)


def test_filtered_pages_look_only_at_what_they_return(backend: StoreBackend) -> None:
    # 2,000 ended records, a few pending and labelled ones among them: a page of the few
    # must not walk the rest, from the start or `after=` a cursor, either direction.
    kept = [record(**({"team": "x"} if i % 500 == 7 else {})) for i in range(2000)]
    waiting = {r.id for r in kept[1000:1003]}

    async def body(store: Store) -> None:
        for r in kept:
            await store.add(r)
            if r.id not in waiting:
                await store.put(ended(r))
        pending = ListQuery(statuses=frozenset({Status.PENDING}), limit=2)
        page = await store.query(pending)
        assert [r.id for r in page.records] == [r.id for r in kept[1000:1002]]
        assert page.more
        assert store.touched <= 3
        rest = await store.query(dataclasses.replace(pending, after=page.records[-1].id))
        assert [r.id for r in rest.records] == [kept[1002].id]
        assert not rest.more
        assert store.touched <= 3
        team = ListQuery(labels=(("team", "x"),), limit=3, descending=True)
        newest = await store.query(team)
        assert [r.id for r in newest.records] == [kept[i].id for i in (1507, 1007, 507)]
        assert store.touched <= 4
        after = await store.query(ListQuery(limit=5, after=kept[1500].id))
        assert [r.id for r in after.records] == [r.id for r in kept[1501:1506]]
        assert store.touched <= 6
        # Deleted and moved records leave every index they were in.
        await store.delete(kept[1000].id)
        await store.put(ended(kept[1001]))
        page = await store.query(pending)
        assert [r.id for r in page.records] == [kept[1002].id]
        assert store.touched <= 2

    with_store(backend, body)


def test_output_keeps_head_and_tail_and_counts_what_it_drops(backend: StoreBackend) -> None:
    kept = record()

    async def body(store: Store) -> None:
        await store.add(kept)
        assert await store.read_output(kept.id, "stdout", 0) == (b"", 0)
        assert await store.append_output(kept.id, "stdout", b"0123456789") == (10, 0)
        assert await store.append_output(kept.id, "stderr", b"err") == (3, 0)
        assert await store.append_output(kept.id, "stdout", b"abcdefghij") == (20, 4)
        # 16 bytes kept per stream: the first 8 and the last 8; the 4 between dropped.
        assert await store.read_output(kept.id, "stdout", 0) == (b"01234567cdefghij", 4)
        assert await store.read_output(kept.id, "stdout", 12) == (b"cdefghij", 0)
        assert await store.read_output(kept.id, "stderr", 1) == (b"rr", 0)
        assert await store.read_output(kept.id, "both", 0) == (b"01234567errcdefghij", 4)
        pieces = await store.output_pieces(kept.id, {"stdout": 0, "stderr": 0})
        assert [(p.stream, p.offset, p.data) for p in pieces] == [
            ("stdout", 0, b"01234567"),
            ("stderr", 0, b"err"),
            ("stdout", 12, b"cdefghij"),
        ]
        assert [p.end for p in pieces] == [8, 3, 20]
        # At combined offset 11 stdout has reached 10, but 10 and 11 were dropped: 12 is next.
        assert await store.output_positions(kept.id, 11) == {"stdout": 12, "stderr": 1}
        with pytest.raises(PayloadNotFound):
            await store.read_output(new_id(), "stdout", 0)

    with_store(backend, body, limit=16)


def test_an_ended_payloads_output_reads_the_same_later(backend: StoreBackend) -> None:
    kept = record()

    async def body(store: Store) -> tuple[bytes, int]:
        await store.add(kept)
        await store.append_output(kept.id, "stdout", b"hello\n")
        await store.put(ended(kept, stdout_bytes=6))
        await store.set_meta("boot_id", "b1")
        return await store.read_output(kept.id, "both", 0)

    assert with_store(backend, body) == (b"hello\n", 0)

    async def again(store: Store) -> tuple[list[str], bytes, str | None]:
        data, _ = await store.read_output(kept.id, "stdout", 0)
        return [r.id for r in await store.list()], data, await store.get_meta("boot_id")

    # A durable backend hands back, on the next open, what it had; the others start empty.
    if backend.durable:
        assert with_store(backend, again) == ([kept.id], b"hello\n", "b1")
    else:
        assert with_store(backend, lambda store: store.list()) == []


def test_delete_forgets_the_output(backend: StoreBackend) -> None:
    kept = record()

    async def body(store: Store) -> None:
        await store.add(kept)
        await store.append_output(kept.id, "stdout", b"x")
        await store.put(ended(kept, stdout_bytes=1))
        await store.delete(kept.id)
        with pytest.raises(PayloadNotFound):
            await store.read_output(kept.id, "stdout", 0)
        assert await store.list() == []

    with_store(backend, body)


def test_ping_answers_while_open(backend: StoreBackend) -> None:
    with_store(backend, lambda store: store.ping())


def test_deliveries_are_kept_with_their_record_and_go_with_it(backend: StoreBackend) -> None:
    from pericles.model import Delivery, DeliveryState

    kept, other = record(), record()

    def delivery(payload: Payload, n: int) -> Delivery:
        return Delivery(new_id(), payload.id, "finished", f"http://h/{n}", "{}", utcnow())

    async def body(store: Store) -> None:
        await store.add(kept)
        await store.add(other)
        first, second = delivery(kept, 1), delivery(kept, 2)
        await store.put_delivery(first)
        await store.put_delivery(second)
        await store.put_delivery(delivery(other, 3))
        done = dataclasses.replace(first, state=DeliveryState.DELIVERED.value)
        await store.put_delivery(done)
        assert await store.deliveries(kept.id) == [done, second]
        unfinished = {d.url for d in await store.unfinished_deliveries()}
        assert unfinished == {"http://h/2", "http://h/3"}
        await store.delete(kept.id)
        with pytest.raises(PayloadNotFound):
            await store.deliveries(kept.id)
        with pytest.raises(PayloadNotFound):
            await store.put_delivery(second)
        assert {d.url for d in await store.unfinished_deliveries()} == {"http://h/3"}

    with_store(backend, body)
