"""The sqlite store below the API: output snapshots, reopening, schema versions, URLs."""

from __future__ import annotations

import asyncio
import dataclasses
import re
import shutil
import sqlite3
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pericles.errors import PayloadNotFound, StoreUnavailable
from pericles.model import STREAMS, ListQuery, Payload, PayloadSpec, Status, new_id, utcnow
from pericles.store import open_store
from pericles.store import sqlite as sqlite_store
from pericles.store.output import OutputLog
from pericles.store.snapshot import chunk_rows, restore, total_rows
from pericles.store.sqlite_schema import BY_KEY, SCHEMA_VERSION, SqliteUrl, connect

#: No server here: once is enough.
STORES = ("sqlite",)

writes_strategy = st.lists(
    st.tuples(st.sampled_from(STREAMS), st.binary(min_size=1, max_size=40)), max_size=40
)


@settings(max_examples=300, deadline=None)
@given(st.integers(2, 64), writes_strategy, st.integers(0, 100))
def test_a_restored_log_reads_as_the_live_one(
    limit: int, writes: list[tuple[str, bytes]], offset: int
) -> None:
    live = OutputLog(limit)
    for stream, data in writes:
        live.append(stream, data)
    restored = restore(limit, reversed(chunk_rows(live)), total_rows(live))
    assert restored.read_both(offset) == live.read_both(offset)
    assert restored.positions_at(offset) == live.positions_at(offset)
    for name in STREAMS:
        assert restored.read(name, offset) == live.read(name, offset)
        assert restored.streams[name].dropped == live.streams[name].dropped


def record(*params: str) -> Payload:
    return Payload.from_spec(PayloadSpec(cmd="/bin/echo", params=list(params)), new_id(), utcnow())


async def reopened(url: str) -> list[Payload]:
    store = open_store(url, 100)
    await store.open()
    try:
        return await store.list()
    finally:
        await store.close()


@pytest.mark.parametrize("update_from", [True, False], ids=["update-from", "row-by-row"])
def test_changes_are_kept_in_order_across_a_reopen(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, update_from: bool
) -> None:
    # SQLite before 3.33 has no UPDATE ... FROM: the store then updates row by row.
    monkeypatch.setattr(sqlite_store, "UPDATE_FROM", update_from)
    url = f"sqlite:///{tmp_path / 'p.db'}"

    async def scenario() -> list[Payload]:
        store = open_store(url, 100)
        await store.open()
        # 100 adds in one commit, then changes to most of them gathered in another.
        records = [record(str(n)) for n in range(100)]
        await asyncio.gather(*(store.add(r) for r in records))
        # Several changes to one record before a commit: the last one is what is kept.
        for n in range(5):
            await store.put(dataclasses.replace(records[3], stdout_bytes=n))
        for r in records[5:]:
            await store.put(dataclasses.replace(r, stdout_bytes=len(r.params[0])))
        await store.delete(records[0].id)
        with pytest.raises(PayloadNotFound):
            await store.delete(records[0].id)
        await store.close()
        return records[1:]

    expected = asyncio.run(scenario())
    expected[2] = dataclasses.replace(expected[2], stdout_bytes=4)
    expected[4:] = [dataclasses.replace(r, stdout_bytes=len(r.params[0])) for r in expected[4:]]
    assert asyncio.run(reopened(url)) == expected


def test_queries_page_through_what_was_reopened(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'p.db'}"

    async def fill_and_query() -> list[str]:
        store = open_store(url, 100)
        await store.open()
        for n in range(5):
            await store.add(record(str(n)))
        await store.close()
        store = open_store(url, 100)
        await store.open()
        page = await store.query(ListQuery(limit=2, descending=True))
        await store.close()
        return [r.params[0] for r in page.records]

    assert asyncio.run(fill_and_query()) == ["4", "3"]


def test_a_reopened_store_answers_filters_from_its_index(tmp_path: Path) -> None:
    # The index is rebuilt from the file at open: a page of the few pending or labelled
    # records among 1,000 ended ones looks at what it returns, not at every record kept.
    url = f"sqlite:///{tmp_path / 'p.db'}"
    kept = [record(str(n)) for n in range(1000)]
    kept[700] = labelled = dataclasses.replace(kept[700], labels={"team": "x"})
    waiting = {kept[500].id, kept[501].id}

    async def scenario() -> None:
        store = open_store(url, 100)
        await store.open()
        for r in kept:
            await store.add(r)
        for r in kept:
            if r.id not in waiting:
                await store.put(dataclasses.replace(r, status="finished", exit_code=0))
        await store.close()
        store = open_store(url, 100)
        await store.open()
        try:
            pending = ListQuery(statuses=frozenset({Status.PENDING}), limit=1)
            page = await store.query(pending)
            assert [r.id for r in page.records] == [kept[500].id]
            assert page.more
            assert store.touched <= 2
            rest = await store.query(dataclasses.replace(pending, after=kept[500].id))
            assert [r.id for r in rest.records] == [kept[501].id]
            assert not rest.more
            assert store.touched <= 2
            team = await store.query(ListQuery(labels=(("team", "x"),), limit=5))
            assert [r.id for r in team.records] == [labelled.id]
            assert store.touched <= 1
            after = await store.query(ListQuery(limit=3, after=kept[900].id, descending=True))
            assert [r.id for r in after.records] == [r.id for r in kept[899:896:-1]]
            assert store.touched <= 4
        finally:
            await store.close()

    asyncio.run(scenario())


def test_a_change_written_behind_is_committed_without_more_traffic(tmp_path: Path) -> None:
    # A later change is committed within a few milliseconds even when nothing else comes
    # to share its commit. The file and its write-ahead log are copied while the store is
    # open (what a kill -9 would leave), and the copy is opened on its own.
    db = tmp_path / "p.db"
    first = record("a")

    async def scenario() -> list[Payload]:
        store = open_store(f"sqlite:///{db}", 100)
        await store.open()
        try:
            await store.add(first)
            await store.put(dataclasses.replace(first, status="finished", exit_code=0))
            deadline = time.monotonic() + 10
            while True:
                copy = tmp_path / "copy"
                shutil.rmtree(copy, ignore_errors=True)
                copy.mkdir()
                for name in ("p.db", "p.db-wal"):
                    if (tmp_path / name).exists():
                        shutil.copy(tmp_path / name, copy / name)
                found = await reopened(f"sqlite:///{copy / 'p.db'}")
                if (found and found[0].status == "finished") or time.monotonic() > deadline:
                    return found
                await asyncio.sleep(0.01)
        finally:
            await store.close()

    found = asyncio.run(scenario())
    assert [(r.id, r.status) for r in found] == [(first.id, "finished")]


TABLES = ("payloads", "output_chunks", "output_streams", "meta", "deliveries")


def test_each_record_is_written_and_read_through_an_index(tmp_path: Path) -> None:
    # What a record costs must not grow with the records kept: every statement the store
    # runs per record finds its rows by a key or an index, never by scanning a table.
    conn = connect(SqliteUrl.parse(f"sqlite:///{tmp_path / 'p.db'}"))
    try:
        for statement in BY_KEY:
            plan = conn.execute(f"EXPLAIN QUERY PLAN {statement}", ("x",) * statement.count("?"))
            details = [row[3] for row in plan.fetchall()]
            # Scans of the statement's own rows (`VALUES` lists) are fine; of a table, never.
            assert any(d.startswith("SEARCH") for d in details), (statement, details)
            scans = [d for d in details if re.match(rf"SCAN ({'|'.join(TABLES)})\b", d)]
            assert not scans, (statement, details)
    finally:
        conn.close()


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "p.db"
    asyncio.run(reopened(f"sqlite:///{db}"))
    conn = sqlite3.connect(db)
    with conn:
        conn.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION + 1,))
    conn.close()
    with pytest.raises(StoreUnavailable, match="newer than this Pericles knows"):
        asyncio.run(reopened(f"sqlite:///{db}"))


@pytest.mark.parametrize(
    ("url", "path", "synchronous"),
    [
        ("sqlite:////var/lib/pericles/p.db", "/var/lib/pericles/p.db", "NORMAL"),
        ("sqlite:///p.db", "p.db", "NORMAL"),
        ("sqlite:////p.db?synchronous=full", "/p.db", "FULL"),
    ],
)
def test_urls(url: str, path: str, synchronous: str) -> None:
    assert SqliteUrl.parse(url) == SqliteUrl(path, synchronous)


@pytest.mark.parametrize(
    "url", ["sqlite://", "sqlite:///", "sqlite://host/p.db", "sqlite:///p.db?mode=x"]
)
def test_bad_urls(url: str) -> None:
    with pytest.raises(StoreUnavailable):
        SqliteUrl.parse(url)
