"""Many machines on one: celery workers over Redis against the local runner, same run.

Run from the project root: `.venv/bin/python bench/cluster.py` (`--help` for the options).
Everything runs on this machine: a redis-server (AOF on), `handler-serve --runner celery`,
`pericles worker` processes, and a local-runner `handler-serve` as the baseline.

1. Drain: N `/bin/true` payloads queued while no worker runs, then 1 or 2 worker processes
   (8 slots each) start: payloads/s from the first start to the last end, read from the
   records. The local runner's figure is N payloads created at once, timed the same way.
2. Enqueue -> start: `started_at - created_at` of payloads created one after another while
   two workers wait (p50, p99).
3. Submit: `POST /payloads` answered/s by one API process (payloads to a queue no worker takes).
4. Cancel: round trip of `POST /payloads/{id}/cancel` of a working payload (p50), answered
   once its worker has ended it.
5. Lost: seconds from `kill -9` of a worker to its payload read `lost` (default TTL 5 s).
"""

from __future__ import annotations

import argparse
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.cluster import RedisServer, Worker, start_worker
from tests.helpers import Server, post_many, start_server, wait_until


def _records(client: httpx.Client) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = client.get("/payloads", params={"limit": 100000}).json()
    return records


def _settled(client: httpx.Client, count: int) -> list[dict[str, Any]] | None:
    records = _records(client)
    done = [r for r in records if r["status"] in ("finished", "lost", "cancelled")]
    return records if len(done) >= count else None


def _span_rate(records: list[dict[str, Any]]) -> float:
    starts = [datetime.fromisoformat(r["started_at"]) for r in records if r.get("started_at")]
    ends = [datetime.fromisoformat(r["finished_at"]) for r in records if r.get("finished_at")]
    return len(ends) / (max(ends) - min(starts)).total_seconds()


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def drain(redis: RedisServer, db: int, workers: int, count: int) -> float:
    api = start_server("--store", redis.url(db), "--runner", "celery")
    started: list[Worker] = []
    try:
        body = b'{"cmd": "/bin/true"}'
        assert post_many(api.port, body, count) == count
        started = [
            start_worker(redis.url(db), hostname=f"bench-{i}", slots=8, ttl=5)
            for i in range(workers)
        ]
        with api.client() as client:
            records = wait_until(lambda: _settled(client, count), 300, "the drain")
        return _span_rate(records)
    finally:
        for worker in started:
            worker.stop()
        api.stop()


def local(count: int) -> float:
    api = start_server()
    try:
        assert post_many(api.port, b'{"cmd": "/bin/true"}', count) == count
        with api.client() as client:
            records = wait_until(lambda: _settled(client, count), 300, "the local run")
        return _span_rate(records)
    finally:
        api.stop()


def latencies(redis: RedisServer, db: int, count: int) -> dict[str, float]:
    api = start_server("--store", redis.url(db), "--runner", "celery")
    workers = [start_worker(redis.url(db), hostname=f"lat-{i}", slots=8, ttl=5) for i in (1, 2)]
    try:
        with api.client() as client:
            waits = []
            for _ in range(count):
                record = client.post("/payloads", json={"cmd": "/bin/true"}).json()
                done = wait_until(_ended_check(client, record["id"]), 30, "a payload to end")
                waits.append(
                    (
                        datetime.fromisoformat(done["started_at"])
                        - datetime.fromisoformat(done["created_at"])
                    ).total_seconds()
                )
            submit = _submit_rate(api, count * 10)
            cancels = []
            for _ in range(max(count // 10, 10)):
                record = client.post("/payloads", json={"cmd": "/bin/sleep", "params": ["60"]})
                payload_id = record.json()["id"]
                wait_until(_working_check(client, payload_id), 30, "working")
                began = time.perf_counter()
                answer = client.post(f"/payloads/{payload_id}/cancel").json()
                cancels.append(time.perf_counter() - began)
                assert answer["status"] == "cancelled", answer
        return {
            "start_p50": _pct(waits, 0.5),
            "start_p99": _pct(waits, 0.99),
            "submit": submit,
            "cancel_p50": statistics.median(cancels),
        }
    finally:
        for worker in workers:
            worker.stop()
        api.stop()


def _submit_rate(api: Server, count: int) -> float:
    body = b'{"cmd": "/bin/true", "queue": "parked"}'
    began = time.perf_counter()
    assert post_many(api.port, body, count) == count
    return count / (time.perf_counter() - began)


def _ended_check(client: httpx.Client, payload_id: str) -> Callable[[], dict[str, Any] | None]:
    def check() -> dict[str, Any] | None:
        record: dict[str, Any] = client.get(f"/payloads/{payload_id}").json()
        return record if record.get("finished_at") else None

    return check


def _status_check(client: httpx.Client, payload_id: str, status: str) -> Callable[[], bool]:
    def check() -> bool:
        return bool(client.get(f"/payloads/{payload_id}").json()["status"] == status)

    return check


def _working_check(client: httpx.Client, payload_id: str) -> Callable[[], bool]:
    return _status_check(client, payload_id, "working")


def lost_detection(redis: RedisServer, db: int, rounds: int) -> list[float]:
    api = start_server("--store", redis.url(db), "--runner", "celery")
    found = []
    try:
        with api.client() as client:
            for i in range(rounds):
                worker = start_worker(redis.url(db), hostname=f"lost-{i}", ttl=5)
                payload_id = client.post(
                    "/payloads", json={"cmd": "/bin/sleep", "params": ["30"]}
                ).json()["id"]
                wait_until(_working_check(client, payload_id), 30, "working")
                began = time.perf_counter()
                worker.stop(signal.SIGKILL)
                wait_until(_status_check(client, payload_id, "lost"), 30, "lost")
                found.append(time.perf_counter() - began)
                # A new worker on the same host name: its janitor kills the orphaned group.
                start_worker(redis.url(db), hostname=f"lost-{i}", ttl=5).stop()
    finally:
        api.stop()
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=1000, help="payloads per drain")
    parser.add_argument("--samples", type=int, default=200, help="enqueue->start samples")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        redis = RedisServer(Path(tmp)).start()
        try:
            base = local(args.count)
            one = drain(redis, 1, 1, args.count)
            two = drain(redis, 2, 2, args.count)
            lat = latencies(redis, 3, args.samples)
            lost = lost_detection(redis, 4, 2)
        finally:
            redis.stop()
    print(f"drain of {args.count} /bin/true (payloads/s, first start to last end):")
    print(f"  local runner        {base:8.0f}")
    print(f"  celery, 1 worker    {one:8.0f}  ({one / base:.2f}x local)")
    print(f"  celery, 2 workers   {two:8.0f}  ({two / base:.2f}x local, {two / one:.2f}x 1 worker)")
    print(
        f"enqueue->start p50 {lat['start_p50'] * 1000:.1f} ms, "
        f"p99 {lat['start_p99'] * 1000:.1f} ms ({args.samples} sequential payloads)"
    )
    print(f"submit: {lat['submit']:.0f} POST/s answered by one API process")
    print(f"cancel p50: {lat['cancel_p50'] * 1000:.1f} ms")
    print(f"lost after kill -9 (TTL 5 s): {', '.join(f'{x:.2f} s' for x in lost)}")


if __name__ == "__main__":
    main()
