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
import os
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import redis as redis_client

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.cluster import RedisServer, Worker, start_worker
from tests.helpers import Server, post_many, start_server, wait_until

from pericles.model import Status
from pericles.store.redis_keys import state_key

FINISHED = state_key(Status.FINISHED)


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


#: The queue a drain's payloads wait on while no worker takes it, and the one they drain from.
_HOLD, _DRAIN = "hold", "drain"
_TICK = os.sysconf("SC_CLK_TCK")


def _cpu(pid: int) -> tuple[float, float]:
    """Seconds of CPU a process used so far: its own threads', and its reaped children's."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
    return (utime + stime) / _TICK, (cutime + cstime) / _TICK


def _machine_busy() -> float:
    """Seconds of CPU used on this machine so far, by anyone (all cores)."""
    with open("/proc/stat") as f:
        ticks = [int(x) for x in f.readline().split()[1:]]
    idle = ticks[3] + ticks[4]  # idle, iowait
    return (sum(ticks[:8]) - idle) / _TICK


@dataclass
class Drain:
    """One drain: its rates and the CPU each part used per payload (ms)."""

    span_rate: float  # payloads/s, first start to last end (from the records)
    wall_rate: float  # payloads/s, from releasing the queue to the last end seen
    cpu_ms: dict[str, float]  # per part, CPU ms per payload


def drain(redis: RedisServer, db: int, workers: int, count: int) -> Drain:
    """`count` payloads queued on a queue no worker takes; the workers start and wait on
    another; then one RENAME hands the whole queue over at once, so every worker is ready
    when the drain begins and the CPU measured is the drain's alone."""
    url = redis.url(db)
    store = redis_client.Redis.from_url(url)
    api = start_server("--store", url, "--runner", "celery", "--max-pending", str(10 * count))
    started: list[Worker] = []
    try:
        body = b'{"cmd": "/bin/true", "queue": "%s"}' % _HOLD.encode()
        created = post_many(api.port, body, count)
        if created != count:
            raise RuntimeError(
                f"{count - created} POSTs failed; the API's log:\n{api.log()[-3000:]}"
            )
        started = [
            start_worker(url, hostname=f"bench-{i}", queues=_DRAIN, slots=8, ttl=5)
            for i in range(workers)
        ]
        assert redis.process is not None
        parts = {"api": api.pid, "redis": redis.process.pid}
        parts |= {f"worker{i}": w.pid for i, w in enumerate(started)}
        before = {name: _cpu(pid) for name, pid in parts.items()}
        machine = _machine_busy()
        began = time.perf_counter()
        store.rename(_HOLD, _DRAIN)
        wait_until(lambda: store.zcard(FINISHED) >= count, 300, "the drain")
        wall = time.perf_counter() - began
        machine = _machine_busy() - machine
        after = {name: _cpu(pid) for name, pid in parts.items()}
        cpu = {name: (after[name][0] - before[name][0]) * 1000 / count for name in parts}
        cpu["payloads"] = (
            sum(after[n][1] - before[n][1] for n in parts if n.startswith("worker")) * 1000 / count
        )
        cpu["other"] = machine * 1000 / count - sum(cpu.values())
        with api.client() as client:
            records = _records(client)
        return Drain(_span_rate(records), count / wall, cpu)
    finally:
        for worker in started:
            worker.stop()
        api.stop()
        store.close()


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


def _median_cpu(drains: list[Drain]) -> dict[str, float]:
    return {name: statistics.median(d.cpu_ms[name] for d in drains) for name in drains[0].cpu_ms}


def _print_drains(count: int, base: list[float], by_workers: dict[int, list[Drain]]) -> None:
    local_rate = statistics.median(base)
    one = statistics.median(d.span_rate for d in by_workers[1])
    two = statistics.median(d.span_rate for d in by_workers[2])
    rounds = len(base)
    print(f"drain of {count} /bin/true (payloads/s, first start to last end; median of {rounds}):")
    print(f"  local runner        {local_rate:8.0f}   rounds: {_rounds(base)}")
    for workers, rate in ((1, one), (2, two)):
        spans = [d.span_rate for d in by_workers[workers]]
        walls = statistics.median(d.wall_rate for d in by_workers[workers])
        label = f"celery, {workers} worker{'s' if workers > 1 else ''}"
        print(
            f"  {label:<19} {rate:8.0f}   rounds: {_rounds(spans)}; "
            f"{walls:.0f}/s from release to last end; {rate / local_rate:.2f}x local"
        )
    ratios = [t.span_rate / o.span_rate for o, t in zip(by_workers[1], by_workers[2], strict=True)]
    print(
        f"  2 workers / 1 worker: {two / one:.2f}x (medians); per round "
        + ", ".join(f"{r:.2f}x" for r in ratios)
    )
    print("CPU ms per payload during the drain (median of rounds; 'other': the rest of the")
    print("machine, other programs included; 'payloads': the /bin/true children):")
    for workers, rate in ((1, one), (2, two)):
        cpu = _median_cpu(by_workers[workers])
        cells = ", ".join(f"{name} {value:.2f}" for name, value in cpu.items())
        print(f"  {workers} worker{'s' if workers > 1 else ''}: {cells}")
        # Cores = CPU s per payload x payloads/s: what the drain kept busy, of this machine's.
        ours = sum(v for k, v in cpu.items() if k != "other") * rate / 1000
        workers_only = sum(v for k, v in cpu.items() if k.startswith("worker")) * rate / 1000
        print(
            f"    cores busy: {ours:.2f} for the drain ({workers_only:.2f} in worker processes), "
            f"{cpu['other'] * rate / 1000:.2f} for the rest, of {os.cpu_count()}"
        )


def _rounds(values: list[float]) -> str:
    return " ".join(f"{v:.0f}" for v in values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=1000, help="payloads per drain")
    parser.add_argument("--rounds", type=int, default=3, help="drains of each kind (median)")
    parser.add_argument("--samples", type=int, default=200, help="enqueue->start samples")
    parser.add_argument("--drain-only", action="store_true", help="only the drains")
    args = parser.parse_args()
    base: list[float] = []
    by_workers: dict[int, list[Drain]] = {1: [], 2: []}
    with tempfile.TemporaryDirectory() as tmp:
        redis = RedisServer(Path(tmp)).start()
        try:
            # Interleaved rounds: a change in the machine's other load touches all kinds.
            for _ in range(args.rounds):
                base.append(local(args.count))
                for workers in (1, 2):
                    redis.flush()
                    by_workers[workers].append(drain(redis, 1, workers, args.count))
            if not args.drain_only:
                lat = latencies(redis, 3, args.samples)
                lost = lost_detection(redis, 4, 2)
        finally:
            redis.stop()
    _print_drains(args.count, base, by_workers)
    if args.drain_only:
        return
    print(
        f"enqueue->start p50 {lat['start_p50'] * 1000:.1f} ms, "
        f"p99 {lat['start_p99'] * 1000:.1f} ms ({args.samples} sequential payloads)"
    )
    print(f"submit: {lat['submit']:.0f} POST/s answered by one API process")
    print(f"cancel p50: {lat['cancel_p50'] * 1000:.1f} ms")
    print(f"lost after kill -9 (TTL 5 s): {', '.join(f'{x:.2f} s' for x in lost)}")


if __name__ == "__main__":
    main()
