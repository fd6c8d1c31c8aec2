"""Filtered pages against the store's index: cost with 100,000 ended records kept vs none.

Run from the project root: `.venv/bin/python bench/store_queries.py` (in-process, memory and
sqlite stores; `--help` for options). `bench/compare.py` calls `measure()` (figures as a
dict) or reads the printed lines, whose form for the memory store stays as it was.

Each query is asked `--calls` times in each of `--repeats` repeats; the figure is the median
of the repeats' means, and the ratio is to the same query on a store holding only the one
record it finds. Keyset pages: `after=` the record in the middle against the first page, both
of ten records of the full store. The sqlite store is filled, closed and opened again before
it is asked: its index is the one rebuilt from the file, as after a restart (the time that
opening takes is printed too).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import re
import statistics
import tempfile
import time

from pericles.model import ListQuery, Payload, PayloadSpec, Status, new_id, utcnow
from pericles.store import Store, open_store

KEPT = 100_000
CALLS = 400
REPEATS = 5
#: Records added at once to a sqlite store: its adds then share commits.
_FILL_BATCH = 1000


def new_record(team: str) -> Payload:
    spec = PayloadSpec.model_validate({"cmd": "/bin/true", "labels": {"team": team}})
    return Payload.from_spec(spec, new_id(), utcnow())


async def _add_ended(store: Store, record: Payload) -> None:
    await store.add(record)
    await store.put(dataclasses.replace(record, status="finished", exit_code=0))


async def filled(url: str, kept: int) -> tuple[Store, str | None, float]:
    """A store holding `kept` ended records then one pending ("found"), reopened when it
    persists; with the id of the record in the middle, and how long the reopening took."""
    store = open_store(url, 1024)
    await store.open()
    for start in range(0, kept, _FILL_BATCH):
        count = min(_FILL_BATCH, kept - start)
        await asyncio.gather(*(_add_ended(store, new_record("x")) for _ in range(count)))
    middle = (await store.query(ListQuery(limit=kept // 2 + 1))).records[-1:]
    await store.add(new_record("y"))
    opening = 0.0
    if url != "memory://":
        await store.close()
        started = time.perf_counter()
        store = open_store(url, 1024)
        await store.open()
        opening = time.perf_counter() - started
    return store, middle[0].id if middle else None, opening


async def timings(store: Store, middle: str | None, calls: int, repeats: int) -> dict[str, float]:
    """Seconds per call of each query, the median over `repeats` of the mean of `calls`."""
    queries = {
        "?status=pending&limit=1": ListQuery(statuses=frozenset({Status.PENDING}), limit=1),
        "?label=team=y&limit=1": ListQuery(labels=(("team", "y"),), limit=1),
    }
    if middle is not None:
        queries["?limit=10"] = ListQuery(limit=10)
        queries["?after=<middle>&limit=10"] = ListQuery(limit=10, after=middle)
    means: dict[str, list[float]] = {name: [] for name in queries}
    for _ in range(repeats):
        # Interleaved: drift of the machine hits every query alike.
        for name, query in queries.items():
            started = time.perf_counter()
            for _ in range(calls):
                await store.query(query)
            means[name].append((time.perf_counter() - started) / calls)
    return {name: statistics.median(values) for name, values in means.items()}


def slug(name: str) -> str:
    return re.sub(r"\W+", "_", name).strip("_")


async def measure(
    kinds: tuple[str, ...] = ("memory", "sqlite"),
    kept: int = KEPT,
    calls: int = CALLS,
    repeats: int = REPEATS,
) -> dict[str, float]:
    """Microseconds per query by key: `{kind}_{query}_empty`, `{kind}_{query}_full` and
    `{kind}_{query}_ratio` (query: `status_pending_limit_1`, `label_team_y_limit_1`),
    `{kind}_first`, `{kind}_keyset`, `{kind}_keyset_ratio`; `{kind}_open_s` the seconds a
    sqlite store takes to open with `kept` records."""
    figures: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="pericles-queries-") as tmp:
        for kind in kinds:
            results = []
            for count in (0, kept):
                url = "memory://" if kind == "memory" else f"sqlite:///{tmp}/{kind}-{count}.db"
                store, middle, opening = await filled(url, count)
                try:
                    results.append(await timings(store, middle, calls, repeats))
                finally:
                    await store.close()
            empty, full = results
            if kind != "memory":
                figures[f"{kind}_open_s"] = opening
            for name, alone in empty.items():
                key = f"{kind}_{slug(name)}"
                figures[f"{key}_empty"] = alone * 1e6
                figures[f"{key}_full"] = full[name] * 1e6
                figures[f"{key}_ratio"] = full[name] / alone
            first, keyset = full["?limit=10"], full["?after=<middle>&limit=10"]
            figures[f"{kind}_first"] = first * 1e6
            figures[f"{kind}_keyset"] = keyset * 1e6
            figures[f"{kind}_keyset_ratio"] = keyset / first
    return figures


def report(figures: dict[str, float], kinds: tuple[str, ...], kept: int) -> None:
    names = ("?status=pending&limit=1", "?label=team=y&limit=1")
    for kind in kinds:
        # The memory store's lines keep their form (bench/compare.py reads them); the other
        # stores' lines begin with their name in brackets.
        prefix = "" if kind == "memory" else f"[{kind}] "
        print(
            f"{prefix}?after=<middle>&limit=10: {figures[f'{kind}_keyset']:.1f} us, first page"
            f" {figures[f'{kind}_first']:.1f} us, both with {kept:,} kept, ratio"
            f" {figures[f'{kind}_keyset_ratio']:.2f}"
        )
        for name in names:
            key = f"{kind}_{slug(name)}"
            print(
                f"{prefix}{name}: {figures[f'{key}_empty']:.1f} us with none kept,"
                f" {figures[f'{key}_full']:.1f} us with {kept:,} kept,"
                f" ratio {figures[f'{key}_ratio']:.2f}"
            )
        opening = figures.get(f"{kind}_open_s")
        if opening is not None:
            print(f"[{kind}] opening the file with {kept:,} records: {opening:.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--stores", default="memory,sqlite", help="comma-separated kinds")
    parser.add_argument("--kept", type=int, default=KEPT, help="records in the full store")
    parser.add_argument("--calls", type=int, default=CALLS, help="calls per repeat")
    parser.add_argument("--repeats", type=int, default=REPEATS, help="repeats (median)")
    args = parser.parse_args()
    kinds = tuple(kind for kind in args.stores.split(",") if kind)
    figures = asyncio.run(measure(kinds, args.kept, args.calls, args.repeats))
    report(figures, kinds, args.kept)


if __name__ == "__main__":
    main()
