"""Filtered pages against the store's index: cost with 100,000 ended records kept vs none.

Run from the project root: `.venv/bin/python bench/store_queries.py` (in-process, memory
store). Each query is asked 2,000 times; the figure is the mean, and the ratio is to the same
query on a store holding only the one record it finds. Keyset pages: `after=` the record
in the middle against the first page, both of ten records of the full store.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time

from pericles.model import ListQuery, Payload, PayloadSpec, Status, new_id, utcnow
from pericles.store.memory import MemoryStore

KEPT = 100_000
ROUNDS = 2000


def new_record(team: str) -> Payload:
    spec = PayloadSpec.model_validate({"cmd": "/bin/true", "labels": {"team": team}})
    return Payload.from_spec(spec, new_id(), utcnow())


async def timings(kept: int) -> dict[str, float]:
    store = MemoryStore(1024)
    await store.open()
    for _ in range(kept):
        record = new_record("x")
        await store.add(record)
        await store.put(dataclasses.replace(record, status="finished", exit_code=0))
    middle = (await store.query(ListQuery(limit=kept // 2 + 1))).records[-1:]
    found = new_record("y")
    await store.add(found)
    queries = {
        "?status=pending&limit=1": ListQuery(statuses=frozenset({Status.PENDING}), limit=1),
        "?label=team=y&limit=1": ListQuery(labels=(("team", "y"),), limit=1),
    }
    if middle:
        queries["?limit=10"] = ListQuery(limit=10)
        queries["?after=<middle>&limit=10"] = ListQuery(limit=10, after=middle[0].id)
    result = {}
    for name, query in queries.items():
        started = time.perf_counter()
        for _ in range(ROUNDS):
            await store.query(query)
        result[name] = (time.perf_counter() - started) / ROUNDS
    return result


async def main() -> None:
    empty, full = await timings(0), await timings(KEPT)
    first, keyset = full["?limit=10"], full["?after=<middle>&limit=10"]
    print(
        f"?after=<middle>&limit=10: {keyset * 1e6:.1f} us, first page {first * 1e6:.1f} us,"
        f" both with {KEPT:,} kept, ratio {keyset / first:.2f}"
    )
    for name, alone in empty.items():
        print(
            f"{name}: {alone * 1e6:.1f} us with none kept, {full[name] * 1e6:.1f} us with"
            f" {KEPT:,} kept, ratio {full[name] / alone:.2f}"
        )


if __name__ == "__main__":
    asyncio.run(main())
