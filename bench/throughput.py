"""Pericles throughput, read latency and memory, each against a baseline measured in this run.

Run from the project root: `.venv/bin/python bench/throughput.py` (`--help` for the options).

1. End-to-end: `/bin/true` payloads created by concurrent keep-alive clients, timed from the
   first POST until every record is terminal, against the rate at which Python alone can
   spawn and reap `/bin/true` (`os.posix_spawn` + `os.waitpid`, one at a time).
2. `GET /payloads/{id}` requests/s against a hello route on the same stack: FastAPI under
   `handler-serve`'s own entry point (uvicorn, uvloop, httptools, its logging), another app.
3. Server RSS per finished record, from VmRSS before and after creating many payloads.

The client runs in this process, on the same cores as the server: it uses a minimal HTTP/1.1
client (`--client raw`), which leaves the server more CPU than httpx does. The figures are
ratios to baselines from the same run, never pass/fail on wall-clock time.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import uvloop

from loadgen import (
    CLIENT_KINDS,
    ClientKind,
    Requester,
    RunResult,
    check_run,
    connections,
    create_request,
    drive,
    is_terminal,
    list_records,
    wait_all_terminal,
    wait_none_active,
)
from serverproc import (
    ServerProcess,
    children,
    handler_serve_argv,
    hello_serve_argv,
    rss_bytes,
)

TRUE = "/bin/true"
SPAWN_ENV = {"PATH": "/usr/bin:/bin"}
KIB = 1024

E2E_TARGET = 0.5
GET_TARGET = 0.7
SUSTAIN_TARGET = 0.8
RSS_TARGET = 2 * KIB


def verdict(met: bool) -> str:
    return "met" if met else "MISSED"


def say(line: str = "") -> str:
    print(line, flush=True)
    return line


# --- baselines: spawning without the server ------------------------------------------------


def spawn_sequential(count: int, seconds: float) -> float:
    """`/bin/true` spawned and reaped one at a time: processes per second."""
    stop = time.perf_counter() + seconds
    started = time.perf_counter()
    done = 0
    while done < count and time.perf_counter() < stop:
        pid = os.posix_spawn(TRUE, [TRUE], SPAWN_ENV)
        os.waitpid(pid, 0)
        done += 1
    return done / (time.perf_counter() - started)


async def spawn_concurrent(count: int, in_flight: int, seconds: float) -> float:
    """`/bin/true` with `in_flight` at once, exits watched by pidfds on the loop: per second."""
    loop = asyncio.get_running_loop()
    stop = time.perf_counter() + seconds
    counter = [0, 0]  # started, reaped

    async def worker() -> None:
        while counter[0] < count and time.perf_counter() < stop:
            counter[0] += 1
            # On the loop's thread, as the server does: posix_spawn returns once exec is done.
            pid = os.posix_spawn(TRUE, [TRUE], SPAWN_ENV)  # noqa: ASYNC221
            pidfd = os.pidfd_open(pid)
            exited: asyncio.Future[None] = loop.create_future()
            loop.add_reader(pidfd, exited.set_result, None)
            try:
                await exited
            finally:
                loop.remove_reader(pidfd)
                os.close(pidfd)
            os.waitpid(pid, os.WNOHANG)  # noqa: ASYNC222 - it has exited: no wait
            counter[1] += 1

    started = time.perf_counter()
    async with asyncio.timeout(seconds + 30.0):
        await asyncio.gather(*(worker() for _ in range(in_flight)))
    return counter[1] / (time.perf_counter() - started)


def count_statuses(records: list[dict[str, Any]]) -> str:
    counts: dict[str, int] = {}
    for record in records:
        counts[record["status"]] = counts.get(record["status"], 0) + 1
    return ", ".join(f"{status}={n}" for status, n in sorted(counts.items()))


# --- 1. end to end -------------------------------------------------------------------------


def process_cpu(pid: int) -> float:
    """CPU seconds the process `pid` has used so far, all its threads, not its children."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def bench_e2e(
    args: argparse.Namespace, server: ServerProcess, already: int = 0
) -> tuple[float, list[str], float]:
    """The end-to-end rate, the ids of the timed payloads, and the server's CPU seconds per
    payload over the timed run; `already`: records kept from earlier rounds."""
    ids: list[str] = []

    def keep_id(body: bytes) -> None:
        ids.append(orjson.loads(body)["id"])

    async with connections(args.client, server.port, args.clients) as conns:
        warm = await drive(
            conns, create_request, count=args.warmup_payloads, seconds=60, expect=201
        )
        check_run("warm-up", warm, args.warmup_payloads)
        await wait_all_terminal(conns[0], already + args.warmup_payloads, within=60)

        cpu = process_cpu(server.pid)
        created = await drive(
            conns,
            create_request,
            count=args.payloads,
            seconds=args.e2e_timeout,
            expect=201,
            sink=keep_id,
            server_pid=server.pid,
        )
        check_run("create", created, args.payloads)
        seen, records = await wait_all_terminal(
            conns[0], already + args.warmup_payloads + args.payloads, within=args.e2e_timeout
        )
        # Includes the polls that wait for the end: a little more than the payloads cost.
        cpu = (process_cpu(server.pid) - cpu) / args.payloads
    say(f"  server CPU per payload: {cpu * 1000:.2f} ms")
    return report_e2e(records, ids, created, seen - created.started), ids, cpu


def report_e2e(
    records: list[dict[str, Any]],
    ids: list[str],
    created: RunResult,
    elapsed: float,
) -> float:
    wall_start = created.wall_started
    wanted = set(ids)
    timed = {record["id"]: record for record in records if record["id"] in wanted}
    last_finish = max(
        dt.datetime.fromisoformat(r["finished_at"]).timestamp()
        for r in timed.values()
        if r.get("finished_at")
    )
    rate = len(ids) / elapsed
    by_finish = len(ids) / (last_finish - wall_start)
    say(
        f"  created {created.ok} in {created.elapsed:.2f}s ({created.rate:.0f} POST/s);"
        f" {created.cpu_summary()}"
    )
    say(f"  statuses: {count_statuses(list(timed.values()))}")
    say(
        f"  none active (polled) after {elapsed:.2f}s;"
        f" last finished_at after {last_finish - wall_start:.2f}s ({by_finish:.0f}/s)"
    )
    return rate


def report_ratio(rate: float, before: float, after: float, outcomes: list[str]) -> None:
    raw_rate = (before + after) / 2
    say(f"  raw spawn (sequential) after the run: {after:.0f}/s; baseline = mean of both")
    ratio = rate / raw_rate
    outcomes.append(
        say(
            f"e2e throughput: {rate:.0f} payloads/s  raw spawn: {raw_rate:.0f}/s"
            f"  ratio {ratio:.2f} (target >= {E2E_TARGET}: {verdict(ratio >= E2E_TARGET)})"
        )
    )


async def readyz_containment(server: ServerProcess) -> str:
    """What the server says contains its payloads (`GET /readyz`): figures need the default."""
    async with connections("raw", server.port, 1) as conns:
        got: list[str] = []
        result = await drive(
            conns,
            lambda _: ("GET", "/readyz", None),
            count=1,
            seconds=10,
            sink=lambda body: got.append(orjson.loads(body).get("containment", "?")),
        )
        check_run("readyz", result, 1)
    return got[0]


async def e2e_rounds(args: argparse.Namespace) -> dict[str, Any]:
    """`args.rounds` rounds on one server (default settings and containment), each: raw
    sequential spawn, end to end, raw spawn again. Ratios are per round, against the mean
    of the two raw figures around it; the medians are the figures."""
    rounds = []
    keep = (args.warmup_payloads + args.payloads) * args.rounds
    argv = [*handler_serve_argv(), "--keep-finished", str(max(keep, 10_000))]
    with ServerProcess("pericles", argv).start() as server:
        containment = await readyz_containment(server)
        for i in range(args.rounds):
            before = spawn_sequential(args.spawn_count, seconds=30)
            rate, _, cpu = await bench_e2e(
                args, server, already=i * (args.warmup_payloads + args.payloads)
            )
            after = spawn_sequential(args.spawn_count, seconds=30)
            raw = (before + after) / 2
            rounds.append(
                {
                    "e2e_per_s": rate,
                    "raw_spawn_per_s": raw,
                    "ratio": rate / raw,
                    "server_cpu_ms_per_payload": cpu * 1000,
                }
            )
            say(
                f"  round {i + 1}: e2e {rate:.0f}/s  raw spawn {before:.0f}/s, {after:.0f}/s"
                f"  ratio {rate / raw:.2f}"
            )
    return {
        "containment": containment,
        "clients": args.clients,
        "payloads": args.payloads,
        "rounds": rounds,
        "e2e_per_s": statistics.median(r["e2e_per_s"] for r in rounds),
        "raw_spawn_per_s": statistics.median(r["raw_spawn_per_s"] for r in rounds),
        "ratio": statistics.median(r["ratio"] for r in rounds),
        "server_cpu_ms_per_payload": statistics.median(
            r["server_cpu_ms_per_payload"] for r in rounds
        ),
    }


def measure_e2e(
    payloads: int = 2000, clients: int = 32, rounds: int = 3, client: str = "raw"
) -> dict[str, Any]:
    """Create -> finished `/bin/true` throughput against a single-thread `os.posix_spawn` +
    `waitpid` loop, same run: medians of `rounds` (see `e2e_rounds`). For bench/compare.py."""
    argv = [
        "--payloads",
        str(payloads),
        "--clients",
        str(clients),
        "--rounds",
        str(rounds),
        "--client",
        client,
    ]
    return uvloop.run(e2e_rounds(parse_args(argv)))


# --- 1b. running while POSTs keep coming ------------------------------------------------


async def sustained_run(
    args: argparse.Namespace, server: ServerProcess, client: ClientKind
) -> tuple[int, RunResult]:
    """POST at full speed for `--sustain-seconds`: how many of the payloads answered 201 in
    that window had finished within it (from their `finished_at`), and the POSTs' result."""
    ids: list[str] = []

    def keep_id(body: bytes) -> None:
        ids.append(orjson.loads(body)["id"])

    async with connections(client, server.port, args.clients) as conns:
        result = await drive(
            conns,
            create_request,
            count=10_000_000,
            seconds=args.sustain_seconds,
            expect=201,
            sink=keep_id,
            server_pid=server.pid,
            retry_on=503,
        )
        end = result.wall_started + result.elapsed
        await wait_all_terminal(conns[0], 0, within=300)
        records = {r["id"]: r for r in await list_records(conns[0])}
    finished = sum(
        1
        for i in ids
        if (at := records[i].get("finished_at"))
        and dt.datetime.fromisoformat(at).timestamp() <= end
    )
    return finished, result


async def bench_sustained(
    args: argparse.Namespace, server: ServerProcess, outcomes: list[str]
) -> None:
    """The sustained run (`sustained_run`), reported against its target."""
    finished, result = await sustained_run(args, server, args.client)
    say(
        f"  201s: {result.ok} in {result.elapsed:.2f}s ({result.rate:.0f}/s),"
        f" 503s retried: {result.retried}; {result.cpu_summary()}"
    )
    ratio = finished / result.ok if result.ok else 0.0
    outcomes.append(
        say(
            f"finished while POSTing: {finished / result.elapsed:.0f}/s"
            f"  201s: {result.rate:.0f}/s  ratio {ratio:.2f}"
            f" (target >= {SUSTAIN_TARGET}: {verdict(ratio >= SUSTAIN_TARGET)})"
        )
    )


# --- 4. the command line's start-up -------------------------------------------------------


def best_time(argv: list[str], rounds: int = 7) -> float:
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        best = min(best, time.perf_counter() - started)
    return best


def bench_cli(outcomes: list[str]) -> None:
    python = sys.executable
    pericles = str(Path(python).with_name("pericles"))
    baseline = best_time([python, "-c", "import httpx"])
    bare = best_time([python, "-c", "pass"])
    say(
        f"  python -c pass: {bare * 1000:.0f} ms;"
        f" python -c 'import httpx': {baseline * 1000:.0f} ms"
    )
    for argv in ([pericles, "--help"], [pericles, "ls", "--help"]):
        took = best_time(argv)
        outcomes.append(
            say(
                f"{' '.join(['pericles', *argv[1:]])}: {took * 1000:.0f} ms"
                f"  import httpx: {baseline * 1000:.0f} ms  ratio {took / baseline:.2f}"
            )
        )


# --- 2. reads against hello ----------------------------------------------------------------


async def measure_gets(
    args: argparse.Namespace, port: int, pid: int, make: Callable[[int], tuple[str, str, None]]
) -> RunResult:
    async with connections(args.client, port, args.get_connections) as conns:
        warm = await drive(conns, make, count=10_000_000, seconds=args.get_warmup)
        check_run("warm-up", warm)
        result = await drive(
            conns, make, count=args.get_max, seconds=args.get_seconds, server_pid=pid
        )
        check_run("GET", result)
    return result


async def bench_get(
    args: argparse.Namespace, server: ServerProcess, ids: list[str], outcomes: list[str]
) -> None:
    paths = [f"/payloads/{payload_id}" for payload_id in ids]

    def get_one(i: int) -> tuple[str, str, None]:
        return "GET", paths[i % len(paths)], None

    def get_hello(_: int) -> tuple[str, str, None]:
        return "GET", "/hello", None

    ours = await measure_gets(args, server.port, server.pid, get_one)
    say(f"  GET /payloads/{{id}}: {ours.ok} in {ours.elapsed:.2f}s; {ours.cpu_summary()}")
    with ServerProcess("hello", hello_serve_argv()).start() as hello:
        base = await measure_gets(args, hello.port, hello.pid, get_hello)
    say(f"  GET /hello (hello_app): {base.ok} in {base.elapsed:.2f}s; {base.cpu_summary()}")
    ratio = ours.rate / base.rate
    per_cpu = ours.per_server_cpu / base.per_server_cpu if base.per_server_cpu else 0.0
    say(
        f"  per server CPU second: {ours.per_server_cpu:.0f} vs {base.per_server_cpu:.0f},"
        f" ratio {per_cpu:.2f} (steadier when other processes share the cores)"
    )
    outcomes.append(
        say(
            f"GET /payloads/{{id}}: {ours.rate:.0f} req/s  hello: {base.rate:.0f} req/s"
            f"  ratio {ratio:.2f} (target >= {GET_TARGET}: {verdict(ratio >= GET_TARGET)})"
        )
    )


# --- 3. memory per record ------------------------------------------------------------------


async def settle(pid: int, within: float, interval: float = 0.05) -> None:
    """Wait until the server has no child left: every payload has been reaped."""
    deadline = time.perf_counter() + within
    for _ in range(int(within / interval) + 1):
        if not children(pid) or time.perf_counter() > deadline:
            return
        await asyncio.sleep(interval)


async def bench_rss(
    args: argparse.Namespace, server: ServerProcess, already: int, outcomes: list[str]
) -> None:
    before = rss_bytes(server.pid)
    async with connections(args.client, server.port, args.clients) as conns:
        # Past --max-pending waiting payloads the server answers 503: wait and retry then.
        created = await drive(
            conns,
            create_request,
            count=args.records,
            seconds=args.rss_timeout,
            expect=201,
            retry_on=503,
        )
        check_run("create", created)
        say(
            f"  created {created.ok} in {created.elapsed:.1f}s ({created.rate:.0f}/s),"
            f" {created.retried} answers 503 (queue full) retried"
        )
        after, records = await rss_when_all_terminal(conns[0], server.pid, already + created.ok)
        listed = rss_bytes(server.pid)
    per_record = (after - before) / created.ok
    say(f"  statuses: {count_statuses(records)}")
    say(
        f"  VmRSS before {before / 2**20:.1f} MiB, after {after / 2**20:.1f} MiB,"
        f" after one GET /payloads of all {len(records)}: {listed / 2**20:.1f} MiB"
    )
    met = per_record < RSS_TARGET
    outcomes.append(
        say(
            f"server RSS: {per_record:.0f} bytes per finished record ({created.ok} records)"
            f"  (target < {RSS_TARGET} B: {verdict(met)})"
        )
    )


async def rss_when_all_terminal(
    requester: Requester, pid: int, expected: int
) -> tuple[int, list[dict[str, Any]]]:
    """VmRSS once every payload has ended, read before the (large) listing that checks it."""
    for _ in range(10):
        await wait_none_active(requester, within=600)
        await settle(pid, within=60)
        after = rss_bytes(pid)
        records = await list_records(requester)
        if len(records) >= expected and all(is_terminal(r["status"]) for r in records):
            return after, records
    raise TimeoutError("payloads still not terminal")


# --- the run -------------------------------------------------------------------------------


async def client_check(args: argparse.Namespace) -> None:
    """How hard each client can push the hello server: the lighter one loads it better."""

    def get_hello(_: int) -> tuple[str, str, None]:
        return "GET", "/hello", None

    with ServerProcess("hello", hello_serve_argv()).start() as hello:
        for kind in CLIENT_KINDS:
            async with connections(kind, hello.port, args.clients) as conns:
                await drive(conns, get_hello, count=10_000_000, seconds=0.5)
                result = await drive(
                    conns,
                    get_hello,
                    count=10_000_000,
                    seconds=args.get_warmup * 2,
                    server_pid=hello.pid,
                )
            say(
                f"  client {kind:5}: {result.rate:6.0f} req/s on GET /hello; {result.cpu_summary()}"
            )


def source_version() -> str:
    """The commit of the code under test, `-dirty` when the working tree has changes."""
    try:
        done = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
            cwd=Path(__file__).resolve().parent,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return done.stdout.strip()


async def run(args: argparse.Namespace, outcomes: list[str]) -> None:
    say(
        f"date {dt.date.today()}  cores {len(os.sched_getaffinity(0))} (nproc)"
        f"  python {platform.python_version()}  {platform.machine()}"
        f"  source {source_version()}  client {args.client}"
    )
    say(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if args.client_check:
        say("\nload generator check")
        await client_check(args)

    say("\nbaselines")
    before = spawn_sequential(args.spawn_count, seconds=30)
    say(f"  raw spawn (posix_spawn + waitpid, sequential): {before:.0f}/s")
    concurrent = await spawn_concurrent(args.spawn_count, args.clients, seconds=30)
    say(
        f"  raw spawn ({args.clients} in flight, posix_spawn + pidfd on the loop):"
        f" {concurrent:.0f}/s"
    )

    # Keep every ended record: the default forgets all but the last 10,000.
    keep = args.warmup_payloads + args.payloads + args.records
    argv = [*handler_serve_argv(), "--keep-finished", str(max(keep, 10_000))]
    with ServerProcess("pericles", argv).start() as server:
        say(
            f"\n1. end to end: {args.payloads} x {TRUE}, {args.clients} clients"
            f" (server pid {server.pid})"
        )
        rate, ids, _ = await bench_e2e(args, server)
        # Spawn speed drifts on a shared machine: measure it again, right after.
        report_ratio(rate, before, spawn_sequential(args.spawn_count, seconds=30), outcomes)

        if args.sustain_seconds > 0:
            say(f"\n1b. POSTs at full speed for {args.sustain_seconds}s, {args.clients} clients")
            await bench_sustained(args, server, outcomes)

        say(
            f"\n2. GET /payloads/{{id}} vs hello, {args.get_connections} connections,"
            f" {args.get_seconds}s each"
        )
        await bench_get(args, server, ids, outcomes)

        if args.records > 0:
            say(f"\n3. RSS per finished record: {args.records} more payloads")
            await bench_rss(args, server, args.warmup_payloads + args.payloads, outcomes)

    say("\n4. pericles (the CLI) start-up, best of 7")
    bench_cli(outcomes)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--client", choices=CLIENT_KINDS, default="raw", help="load generator")
    parser.add_argument("--clients", type=int, default=32, help="concurrent creating clients")
    parser.add_argument("--payloads", type=int, default=2000, help="payloads in the e2e run")
    parser.add_argument("--warmup-payloads", type=int, default=200, help="untimed, before e2e")
    parser.add_argument("--e2e-timeout", type=float, default=120, help="seconds")
    parser.add_argument("--spawn-count", type=int, default=2000, help="baseline spawns")
    parser.add_argument("--get-connections", type=int, default=64)
    parser.add_argument("--get-seconds", type=float, default=5.0, help="per measured GET run")
    parser.add_argument("--get-warmup", type=float, default=1.0, help="seconds, untimed")
    parser.add_argument("--get-max", type=int, default=1_000_000, help="bound on GETs per run")
    parser.add_argument(
        "--rounds", type=int, default=0, help="only the e2e ratio: median of N rounds"
    )
    parser.add_argument("--sustain-seconds", type=float, default=5.0, help="0 skips it")
    parser.add_argument("--records", type=int, default=100_000, help="for RSS; 0 skips it")
    parser.add_argument("--rss-timeout", type=float, default=600, help="seconds to create them")
    parser.add_argument(
        "--client-check",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="compare the raw and httpx load generators on GET /hello first",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    started = time.perf_counter()
    outcomes: list[str] = []
    if args.rounds:
        figures = uvloop.run(e2e_rounds(args))
        say(
            f"e2e /bin/true, {args.clients} clients, containment {figures['containment']},"
            f" median of {args.rounds}: {figures['e2e_per_s']:.0f}/s, raw spawn"
            f" {figures['raw_spawn_per_s']:.0f}/s, ratio {figures['ratio']:.2f};"
            f" server CPU {figures['server_cpu_ms_per_payload']:.2f} ms per payload"
        )
        return
    try:
        uvloop.run(run(args, outcomes))
    finally:
        say("\nsummary")
        for line in outcomes:
            say(f"  {line}")
        say(f"  total time {time.perf_counter() - started:.0f}s")
        say(f"  load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
