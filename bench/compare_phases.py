"""The measurements `bench/compare.py` runs, each returning its figures.

Every HTTP figure comes from `loadgen` (a minimal HTTP/1.1 client in the benchmark's
process, on the same cores as the server).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import orjson

import throughput
from loadgen import (
    RawConnection,
    RunResult,
    check_run,
    connections,
    create_request,
    drive,
    list_records,
    own_cpu,
    wait_all_terminal,
)
from serverproc import VENV_BIN, ServerProcess, cpu_seconds

TRUE = "/bin/true"
_CREATE = b'{"cmd": "/bin/true", "params": []}'


def spawn_loop(seconds: float) -> float:
    """`/bin/true` spawned and reaped one at a time by one thread: per second."""
    env = {"PATH": "/usr/bin:/bin"}
    started = time.perf_counter()
    stop = started + seconds
    done = 0
    while time.perf_counter() < stop:
        os.waitpid(os.posix_spawn(TRUE, [TRUE], env), 0)
        done += 1
    return done / (time.perf_counter() - started)


@dataclasses.dataclass(frozen=True)
class EndToEnd:
    """A create -> ended run: payloads per second, their ids, and CPU per payload (ms)."""

    rate: float
    ids: list[str]
    #: The server's own CPU (user + system, all its threads).
    server_ms: float
    #: The payloads' own CPU, counted when the server reaps them.
    children_ms: float
    #: This process's CPU: the clients sending and polling.
    client_ms: float


class _CpuMeter:
    """CPU seconds of the server, its reaped children and this process, from here on."""

    def __init__(self, server_pid: int) -> None:
        self._pid = server_pid
        self._start = (*cpu_seconds(server_pid), own_cpu())

    def per_item_ms(self, count: int) -> tuple[float, float, float]:
        now = (*cpu_seconds(self._pid), own_cpu())
        server, children, client = (
            (b - a) * 1000 / count for a, b in zip(self._start, now, strict=True)
        )
        return server, children, client


async def e2e(args: argparse.Namespace, server: ServerProcess) -> EndToEnd:
    """Payloads per second from the first POST until every one is terminal, and its CPU."""
    ids: list[str] = []
    async with connections("raw", server.port, args.clients) as conns:
        before = len(await list_records(conns[0]))
        warm = await drive(
            conns, create_request, count=args.warmup_payloads, seconds=60, expect=201
        )
        check_run("warm-up", warm, args.warmup_payloads)
        await wait_all_terminal(conns[0], before + args.warmup_payloads, within=120)
        meter = _CpuMeter(server.pid)
        created = await drive(
            conns,
            create_request,
            count=args.payloads,
            seconds=120,
            expect=201,
            sink=lambda body: ids.append(orjson.loads(body)["id"]),
            server_pid=server.pid,
        )
        check_run("create", created, args.payloads)
        total = before + args.warmup_payloads + args.payloads
        seen, _ = await wait_all_terminal(conns[0], total, within=300)
        cpu = meter.per_item_ms(args.payloads)
    return EndToEnd(args.payloads / (seen - created.started), ids, *cpu)


async def standin_e2e(args: argparse.Namespace, server: ServerProcess) -> EndToEnd:
    """The stand-in's `POST /true` from as many clients as `e2e`: each answer comes after
    its `/bin/true` has exited, so answers per second are processes run per second."""

    def make(_: int) -> tuple[str, str, bytes]:
        return "POST", "/true", b"{}"

    async with connections("raw", server.port, args.clients) as conns:
        warm = await drive(conns, make, count=args.warmup_payloads, seconds=60)
        check_run("warm-up", warm, args.warmup_payloads)
        meter = _CpuMeter(server.pid)
        result = await drive(conns, make, count=args.payloads, seconds=120)
        check_run("POST /true", result, args.payloads)
        cpu = meter.per_item_ms(result.ok)
    return EndToEnd(result.rate, [], *cpu)


async def sustained(args: argparse.Namespace, server: ServerProcess) -> tuple[float, float]:
    """POSTs at full speed: payloads finished within the window per second, and 201s/s."""
    finished, result = await throughput.sustained_run(args, server, "raw")
    return finished / result.elapsed, result.rate


def _p(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


async def latencies(
    port: int, path: str, expect: int, args: argparse.Namespace
) -> tuple[float, float]:
    """p50 and p99 in ms of `POST path` (a `/bin/true` create) on one connection."""
    conn = await RawConnection.open(port)
    times: list[float] = []
    try:
        for i in range(args.latency_requests + 20):
            started = time.perf_counter()
            status, body = await conn.request("POST", path, _CREATE)
            took = time.perf_counter() - started
            if status != expect or (expect == 201 and b'"finished"' not in body):
                raise RuntimeError(f"POST {path}: {status} {body[:200]!r}")
            if i >= 20:  # the first ones warm up
                times.append(took * 1000)
    finally:
        await conn.close()
    return statistics.median(times), _p(times, 0.99)


async def post_then_wait(port: int, args: argparse.Namespace) -> tuple[float, float]:
    """p50 and p99 in ms of `POST /payloads` then `GET /payloads/{id}?wait=30`."""
    conn = await RawConnection.open(port)
    times: list[float] = []
    try:
        for i in range(args.latency_requests + 20):
            started = time.perf_counter()
            status, body = await conn.request("POST", "/payloads", _CREATE)
            payload_id = orjson.loads(body)["id"]
            status, body = await conn.request("GET", f"/payloads/{payload_id}?wait=30")
            took = time.perf_counter() - started
            if status != 200 or b'"finished"' not in body:
                raise RuntimeError(f"GET ?wait=: {status} {body[:200]!r}")
            if i >= 20:
                times.append(took * 1000)
    finally:
        await conn.close()
    return statistics.median(times), _p(times, 0.99)


def id_paths(ids: list[str]) -> Callable[[int], str]:
    paths = [f"/payloads/{payload_id}" for payload_id in ids]
    return lambda i: paths[i % len(paths)]


async def gets(
    args: argparse.Namespace, port: int, pid: int, path: Callable[[int], str]
) -> RunResult:
    """GETs on `--get-connections` connections for `--get-seconds`, after a 1 s warm-up."""

    def make(i: int) -> tuple[str, str, None]:
        return "GET", path(i), None

    async with connections("raw", port, args.get_connections) as conns:
        check_run("warm-up", await drive(conns, make, count=10_000_000, seconds=1.0))
        result = await drive(
            conns, make, count=10_000_000, seconds=args.get_seconds, server_pid=pid
        )
        check_run("GET", result)
    return result


async def create_some(port: int, count: int) -> list[str]:
    """`count` `/bin/true` payloads, ended; their ids."""
    ids: list[str] = []
    async with connections("raw", port, 8) as conns:
        created = await drive(
            conns,
            create_request,
            count=count,
            seconds=60,
            expect=201,
            sink=lambda body: ids.append(orjson.loads(body)["id"]),
        )
        check_run("create", created, count)
        await wait_all_terminal(conns[0], count, within=60)
    return ids


def cli(args: argparse.Namespace, port: int) -> dict[str, float]:
    """Median ms of the CLI's commands and of `python -c 'import httpx'`, interleaved."""
    pericles = str(VENV_BIN / "pericles")
    cases = {
        "cli_httpx": [sys.executable, "-c", "import httpx"],
        "cli_help": [pericles, "--help"],
        "cli_ls": [pericles, "ls"],
        "cli_run": [pericles, "run", "--wait", "--", TRUE],
    }
    env = {**os.environ, "PERICLES_URL": f"http://127.0.0.1:{port}"}
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.cli_runs):
        for name, argv in cases.items():
            started = time.perf_counter()
            subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, env=env, timeout=60)
            times[name].append((time.perf_counter() - started) * 1000)
    return {name: statistics.median(values) for name, values in times.items()}
