"""Which ASGI server should run Pericles: uvicorn (uvloop + httptools) or granian (uvloop)?

Run from the project root: `.venv/bin/python bench/asgi_servers.py` (`--help` for options).

Each server runs, one at a time, on a free loopback port:
- the hello app (`bench/hello_app.py`): `GET /hello` requests/s;
- the Pericles app (`bench/pericles_app.py`): `POST /payloads` of `/bin/true` requests/s and
  the time until all of them have finished, then `GET /payloads/{id}` requests/s.

uvicorn gets the options `handler-serve` passes; its access log is on there (as in
`handler-serve`) and off in the `-noaccess` variant. granian's access log is off by default,
on in the `-access` variant. With `--rounds` above 1 the servers take turns and the median
of each figure is reported. The load generator runs in this process on the same cores.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence

import orjson
import uvloop

from loadgen import (
    CLIENT_KINDS,
    RunResult,
    check_run,
    connections,
    create_request,
    drive,
    wait_all_terminal,
)
from serverproc import ServerProcess, granian_argv, uvicorn_argv

ArgvFactory = Callable[[str], list[str]]

SERVERS: dict[str, ArgvFactory] = {
    "uvicorn": lambda target: uvicorn_argv(target, access_log=True),
    "uvicorn-noaccess": lambda target: uvicorn_argv(target, access_log=False),
    "granian": lambda target: granian_argv(target, access_log=False),
    "granian-access": lambda target: granian_argv(target, access_log=True),
}
FIGURES = ("hello GET/s", "POST/s", "POST e2e/s", "GET id/s")


@dataclasses.dataclass
class Figures:
    """Per figure name, one value per round."""

    values: dict[str, list[float]] = dataclasses.field(default_factory=dict)
    notes: list[str] = dataclasses.field(default_factory=list)

    def add(self, name: str, value: float) -> None:
        self.values.setdefault(name, []).append(value)

    def median(self, name: str) -> float:
        found = self.values.get(name)
        return statistics.median(found) if found else 0.0


def say(line: str = "") -> None:
    print(line, flush=True)


def get(path: str) -> Callable[[int], tuple[str, str, None]]:
    def make(_: int) -> tuple[str, str, None]:
        return "GET", path, None

    return make


async def measure_hello(args: argparse.Namespace, server: ServerProcess) -> RunResult:
    async with connections(args.client, server.port, args.connections) as conns:
        check_run("warm-up", await drive(conns, get("/hello"), count=10**7, seconds=args.warmup))
        result = await drive(
            conns,
            get("/hello"),
            count=10**7,
            seconds=args.seconds,
            server_pid=server.worker_pid,
        )
        check_run("GET /hello", result)
    return result


async def measure_pericles(
    args: argparse.Namespace, server: ServerProcess
) -> tuple[RunResult, float, RunResult]:
    """POST /payloads (its run, and the e2e rate until all finished), then GET /payloads/{id}."""
    ids: list[str] = []

    def keep_id(body: bytes) -> None:
        ids.append(orjson.loads(body)["id"])

    async with connections(args.client, server.port, args.clients) as conns:
        warm = await drive(
            conns, create_request, count=args.warmup_payloads, seconds=60, expect=201
        )
        check_run("warm-up", warm, args.warmup_payloads)
        await wait_all_terminal(conns[0], args.warmup_payloads, within=60)
        posts = await drive(
            conns,
            create_request,
            count=args.payloads,
            seconds=120,
            expect=201,
            sink=keep_id,
            server_pid=server.worker_pid,
        )
        check_run("POST /payloads", posts, args.payloads)
        seen, _ = await wait_all_terminal(conns[0], args.warmup_payloads + args.payloads, 120)
    e2e = args.payloads / (seen - posts.started)
    paths = [f"/payloads/{payload_id}" for payload_id in ids]

    def get_one(i: int) -> tuple[str, str, None]:
        return "GET", paths[i % len(paths)], None

    async with connections(args.client, server.port, args.connections) as conns:
        check_run("warm-up", await drive(conns, get_one, count=10**7, seconds=args.warmup))
        gets = await drive(
            conns, get_one, count=10**7, seconds=args.seconds, server_pid=server.worker_pid
        )
        check_run("GET /payloads/{id}", gets)
    return posts, e2e, gets


async def one_server(args: argparse.Namespace, name: str, figures: Figures) -> None:
    factory = SERVERS[name]
    with ServerProcess(f"{name}/hello", factory("hello_app:app")).start() as server:
        hello = await measure_hello(args, server)
    figures.add("hello GET/s", hello.rate)
    say(
        f"  {name:17} hello GET  {hello.rate:7.0f}/s   {hello.per_server_cpu:5.0f}/server CPU-s;"
        f" {hello.cpu_summary()}"
    )
    with ServerProcess(f"{name}/pericles", factory("pericles_app:app")).start() as server:
        posts, e2e, gets = await measure_pericles(args, server)
    figures.add("POST/s", posts.rate)
    figures.add("POST e2e/s", e2e)
    figures.add("GET id/s", gets.rate)
    say(f"  {name:17} POST       {posts.rate:7.0f}/s   {posts.cpu_summary()}")
    say(f"  {name:17} POST e2e   {e2e:7.0f}/s   (from first POST until all finished)")
    say(
        f"  {name:17} GET id     {gets.rate:7.0f}/s   {gets.per_server_cpu:5.0f}/server CPU-s;"
        f" {gets.cpu_summary()}"
    )


def report(names: Sequence[str], results: dict[str, Figures], baseline: str) -> None:
    say(f"\nmedians over rounds; ratio = server / {baseline}")
    say(f"  {'server':17}" + "".join(f"{figure:>22}" for figure in FIGURES))
    base = results[baseline]
    for name in names:
        cells = []
        for figure in FIGURES:
            value = results[name].median(figure)
            ratio = value / base.median(figure) if base.median(figure) else 0.0
            cells.append(f"{value:10.0f} ({ratio:4.2f}x)")
        say(f"  {name:17}" + "".join(f"{cell:>22}" for cell in cells))


async def run(args: argparse.Namespace) -> None:
    say(
        f"cores {len(os.sched_getaffinity(0))}  python {platform.python_version()}"
        f"  client {args.client}, {args.connections} connections for GETs,"
        f" {args.clients} for POSTs"
        f"  load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    results = {name: Figures() for name in args.servers}
    for round_no in range(1, args.rounds + 1):
        say(f"\nround {round_no}")
        for name in args.servers:
            await one_server(args, name, results[name])
    report(args.servers, results, args.servers[0])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--servers",
        nargs="+",
        choices=list(SERVERS),
        default=list(SERVERS),
        help="servers to compare; the first is the baseline of the ratios",
    )
    parser.add_argument("--client", choices=CLIENT_KINDS, default="raw", help="load generator")
    parser.add_argument("--connections", type=int, default=64, help="for the GET runs")
    parser.add_argument("--clients", type=int, default=32, help="for the POST run")
    parser.add_argument("--seconds", type=float, default=5.0, help="per measured GET run")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds, untimed")
    parser.add_argument("--payloads", type=int, default=2000, help="POSTs per server")
    parser.add_argument("--warmup-payloads", type=int, default=200, help="untimed POSTs")
    parser.add_argument("--rounds", type=int, default=2, help="servers take turns this often")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    started = time.perf_counter()
    try:
        uvloop.run(run(args))
    finally:
        say(f"total time {time.perf_counter() - started:.0f}s")


if __name__ == "__main__":
    main()
