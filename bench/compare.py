"""Issue P17's table in one command: every figure beside a baseline measured in the same run.

Run from the project root: `.venv/bin/python bench/compare.py` (`--quick` for a short run,
`--help` for the options). Each round measures, in this order:

1. the baseline spawn loop: `/bin/true` by `os.posix_spawn` + `waitpid`, one thread;
2. Pericles (`handler-serve`, memory store, access log, metrics and a policy on:
   `--allow /bin/true`): `/bin/true` created -> finished by 32 clients, with the CPU the
   server, the payloads and the clients used per payload; finished per second
   while POSTs keep coming; `POST /payloads?wait=` latency on one connection (and POST then
   `GET ?wait=`); `GET /payloads/{id}` per server CPU-second; the CLI against this server;
3. the hello app on the same stack (`bench/hello_serve.py`: handler-serve's entry point, its
   uvicorn config and access log): `POST /true`, a route that spawns `/bin/true` and
   answers after it exits (the stand-in for webhook: no Go toolchain here), from as many
   clients as the e2e run, then on one connection; `GET /hello`;
4. the same e2e run on the SQLite store;
5. granian: the hello app and the Pericles app (`bench/pericles_app.py`), `GET` per CPU-s;
6. `bench/store_queries.py` (filters with 100,000 records kept) and `bench/output.py`
   (drain against a pipe drained by `cat`), as subprocesses.

The table shows medians over the rounds, and for each phase the share of the machine's CPU
time that was idle while it ran (other sessions share these cores: a low idle share means
the figures were squeezed). Ratios compare figures of the same round before the median.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import uvloop

import compare_phases as phases
from serverproc import (
    BENCH_DIR,
    VENV_BIN,
    ServerProcess,
    granian_argv,
    handler_serve_argv,
    hello_serve_argv,
)

Ratio = Callable[[float, float], float]


@dataclasses.dataclass
class Results:
    """Per figure, one value per round; per phase, the idle share of each round."""

    values: dict[str, list[float]] = dataclasses.field(default_factory=dict)
    idle: dict[str, list[float]] = dataclasses.field(default_factory=dict)

    def add(self, **figures: float | None) -> None:
        for name, value in figures.items():
            if value is not None:
                self.values.setdefault(name, []).append(value)

    def median(self, name: str) -> float | None:
        found = self.values.get(name)
        return statistics.median(found) if found else None

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        before = _cpu_ticks()
        yield
        after = _cpu_ticks()
        total = after[0] - before[0]
        if total > 0:
            self.idle.setdefault(name, []).append((after[1] - before[1]) / total)


def _cpu_ticks() -> tuple[int, int]:
    """All CPU ticks since boot, and the idle ones (idle + iowait), all cores together."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(fields[:8]), fields[3] + fields[4]


def say(line: str = "") -> None:
    print(line, flush=True)


def pericles_argv(store: str, keep: int) -> list[str]:
    return [
        *handler_serve_argv(),
        "--allow",
        "/bin/true",
        "--keep-finished",
        str(keep),
        "--store",
        store,
    ]


async def round_pericles(args: argparse.Namespace, results: Results) -> None:
    keep = max(10_000, 2 * (args.payloads + args.warmup_payloads) + 10 * args.latency_requests)
    with ServerProcess("pericles", pericles_argv("memory://", keep)).start() as server:
        with results.phase("e2e"):
            run = await phases.e2e(args, server)
        ids = run.ids
        results.add(
            e2e=run.rate,
            e2e_cpu=run.server_ms,
            e2e_children_cpu=run.children_ms,
            # What 1.0x the spawn loop leaves the server: all cores' time per payload at the
            # loop's rate, less what the payloads and the clients use in this same run.
            e2e_budget=_budget_ms(results, run),
        )
        if args.sustain_seconds > 0:
            with results.phase("sustain"):
                finished, answered = await phases.sustained(args, server)
            results.add(sustain_finished=finished, sustain_201=answered)
        with results.phase("latency"):
            waited = await phases.latencies(server.port, "/payloads?wait=30", 201, args)
            two = await phases.post_then_wait(server.port, args)
        results.add(wait_p50=waited[0], wait_p99=waited[1], two_p50=two[0], two_p99=two[1])
        with results.phase("get"):
            gets = await phases.gets(args, server.port, server.pid, phases.id_paths(ids))
        results.add(get_cpu=gets.per_server_cpu, get_rate=gets.rate)
        with results.phase("cli"):
            results.add(**phases.cli(args, server.port))
    with ServerProcess("hello", hello_serve_argv()).start() as hello:
        with results.phase("stand-in e2e"):
            standin = await phases.standin_e2e(args, hello)
        results.add(
            standin_e2e=standin.rate,
            standin_cpu=standin.server_ms,
            standin_children_cpu=standin.children_ms,
        )
        with results.phase("hello"):
            base = await phases.gets(args, hello.port, hello.pid, lambda _: "/hello")
            true = await phases.latencies(hello.port, "/true", 200, args)
        results.add(hello_cpu=base.per_server_cpu, hello_rate=base.rate)
        results.add(true_p50=true[0], true_p99=true[1])
    if args.sqlite:
        with tempfile.TemporaryDirectory(prefix="bench-sqlite-") as tmp:
            store = f"sqlite:///{tmp}/pericles.db"
            sqlite_server = ServerProcess("sqlite", pericles_argv(store, keep))
            with sqlite_server.start() as server, results.phase("e2e sqlite"):
                sqlite = await phases.e2e(args, server)
            results.add(e2e_sqlite=sqlite.rate)


def _budget_ms(results: Results, run: phases.EndToEnd) -> float | None:
    spawn = results.values.get("spawn")
    if not spawn:
        return None
    cores = len(os.sched_getaffinity(0))
    return cores * 1000 / spawn[-1] - run.children_ms - run.client_ms


async def round_granian(args: argparse.Namespace, results: Results) -> None:
    with results.phase("granian"):
        with ServerProcess("granian-hello", granian_argv("hello_app:app")).start() as server:
            hello = await phases.gets(args, server.port, server.worker_pid, lambda _: "/hello")
        with ServerProcess("granian-pericles", granian_argv("pericles_app:app")).start() as server:
            ids = await phases.create_some(server.port, 64)
            ours = await phases.gets(args, server.port, server.worker_pid, phases.id_paths(ids))
    results.add(
        granian_hello_cpu=hello.per_server_cpu,
        granian_hello_rate=hello.rate,
        granian_get_cpu=ours.per_server_cpu,
        granian_get_rate=ours.rate,
    )


_QUERY_LINE = re.compile(r"^(\S+): ([\d.]+) us with none kept, ([\d.]+) us with ([\d,]+) kept")
_KEYSET_LINE = re.compile(r"^\?after=<middle>&limit=10: ([\d.]+) us, first page ([\d.]+) us")
_DRAIN_PIPE = re.compile(r"into a pipe, cat drains:\s+(\d+) MB/s")
_DRAIN_SERVED = re.compile(r"through the server:\s+(\d+) MB/s")


def _script(name: str, *argv: str, timeout: float = 900) -> str:
    done = subprocess.run(
        [sys.executable, str(BENCH_DIR / name), *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=BENCH_DIR.parent,
    )
    if done.returncode != 0:
        say(f"  {name} failed ({done.returncode}): {done.stderr[-800:]}")
    return done.stdout


def round_scripts(args: argparse.Namespace, results: Results) -> None:
    if args.queries:
        with results.phase("queries"):
            text = _script("store_queries.py")
        for line in text.splitlines():
            if match := _QUERY_LINE.match(line):
                key = "q_" + re.sub(r"\W+", "_", match[1]).strip("_")
                results.add(**{f"{key}_empty": float(match[2]), f"{key}_full": float(match[3])})
            elif match := _KEYSET_LINE.match(line):
                results.add(q_keyset=float(match[1]), q_first=float(match[2]))
    if args.drain_bytes > 0:
        with results.phase("drain"):
            text = _script(
                "output.py",
                "--drain-bytes",
                str(args.drain_bytes),
                "--repeat",
                "1",
                "--fanout-bytes",
                "1000",
                "--clients",
                "1",
            )
        pipe, served = _DRAIN_PIPE.search(text), _DRAIN_SERVED.search(text)
        if pipe and served:
            results.add(drain=float(served[1]), drain_pipe=float(pipe[1]))
        else:
            say("  bench/output.py printed no drain figures:\n" + text[-800:])


def ratio_of(results: Results, ours: str, base: str, invert: bool = False) -> float | None:
    """The median over rounds of each round's ratio."""
    a, b = results.values.get(ours, []), results.values.get(base, [])
    pairs = [(x, y) for x, y in zip(a, b, strict=False) if x and y]
    if not pairs:
        return None
    return statistics.median((y / x) if invert else (x / y) for x, y in pairs)


#: (what, ours, its unit, baseline's name, baseline, phase, goal); ratio = ours / baseline.
ROWS: list[tuple[str, str, str, str, str, str, str]] = [
    ("`/bin/true` create -> finished, 32 clients", "e2e", "/s",
     "posix_spawn+waitpid loop, one thread", "spawn", "e2e", ">= 1.35 (floor 1.0)"),
    ("server CPU per payload in that run", "e2e_cpu", " ms",
     "what 1.0x the loop leaves it", "e2e_budget", "e2e", "<= 1 for the floor"),
    ("payloads' own CPU per payload in that run", "e2e_children_cpu", " ms",
     "the stand-in's, below", "standin_children_cpu", "e2e", ""),
    ("stand-in `POST /true` create -> exited, 32 clients", "standin_e2e", "/s",
     "posix_spawn+waitpid loop, one thread", "spawn", "stand-in e2e", "the stack's ceiling"),
    ("stand-in server CPU per `POST /true`", "standin_cpu", " ms",
     "what 1.0x the loop leaves Pericles", "e2e_budget", "stand-in e2e", ""),
    ("finished while POSTs keep coming", "sustain_finished", "/s",
     "201s answered", "sustain_201", "sustain", ">= 0.8"),
    ("`POST /payloads?wait=` p50, one connection", "wait_p50", " ms",
     "`POST /true` p50 (spawns, answers after exit)", "true_p50", "latency", "<= 1.3"),
    ("`POST /payloads?wait=` p99", "wait_p99", " ms", "`POST /true` p99", "true_p99",
     "latency", ""),
    ("POST then `GET ?wait=` p50", "two_p50", " ms", "`POST /true` p50", "true_p50",
     "latency", ""),
    ("`GET /payloads/{id}` per server CPU-s, uvicorn", "get_cpu", "",
     "`GET /hello` same stack", "hello_cpu", "get", ">= 0.7"),
    ("`GET /payloads/{id}` req/s, uvicorn", "get_rate", "/s", "`GET /hello` req/s",
     "hello_rate", "get", ""),
    ("`GET /payloads/{id}` per server CPU-s, granian", "granian_get_cpu", "",
     "`GET /hello` granian", "granian_hello_cpu", "granian", ""),
    ("`GET /payloads/{id}` req/s, granian", "granian_get_rate", "/s",
     "`GET /hello` req/s granian", "granian_hello_rate", "granian", ""),
    ("`?status=pending&limit=1`, 100k kept (memory)", "q_status_pending_limit_1_full", " us",
     "none kept", "q_status_pending_limit_1_empty", "queries", "<= 2"),
    ("`?label=team=y&limit=1`, 100k kept (memory)", "q_label_team_y_limit_1_full", " us",
     "none kept", "q_label_team_y_limit_1_empty", "queries", "<= 2"),
    ("`?after=<middle>&limit=10`, 100k kept", "q_keyset", " us", "first page", "q_first",
     "queries", "<= 2"),
    ("drain through the server", "drain", " MB/s", "pipe + `cat`", "drain_pipe", "drain",
     ">= 0.9"),
    ("`pericles --help`", "cli_help", " ms", "`python -c 'import httpx'`", "cli_httpx",
     "cli", ""),
    ("`pericles ls`", "cli_ls", " ms", "`python -c 'import httpx'`", "cli_httpx", "cli", ""),
    ("`pericles run --wait -- /bin/true`", "cli_run", " ms", "`python -c 'import httpx'`",
     "cli_httpx", "cli", "<= 1.5"),
    ("create -> finished on SQLite", "e2e_sqlite", "/s", "the same on memory", "e2e",
     "e2e sqlite", ">= 0.8"),
]  # fmt: skip


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit in (" ms",) or value < 10:
        return f"{value:.2f}{unit}"
    return f"{value:,.0f}{unit}"


def table(results: Results) -> list[str]:
    lines = [
        "| what | Pericles | baseline, same run | ratio | goal | idle |",
        "| --- | ---: | --- | ---: | --- | ---: |",
    ]
    for what, ours, unit, base_name, base, phase, goal in ROWS:
        mine, theirs = results.median(ours), results.median(base)
        if mine is None:
            continue
        ratio = ratio_of(results, ours, base)
        idle = results.idle.get(phase)
        lines.append(
            f"| {what} | {_fmt(mine, unit)} | {base_name}: {_fmt(theirs, unit)}"
            f" | {'-' if ratio is None else f'{ratio:.2f}'} | {goal}"
            f" | {'-' if not idle else f'{statistics.median(idle):.0%}'} |"
        )
    return lines


def source_version() -> str:
    done = subprocess.run(
        ["git", "describe", "--always", "--dirty"],
        capture_output=True,
        text=True,
        check=False,
        cwd=BENCH_DIR,
    )
    return done.stdout.strip() or "unknown"


async def run(args: argparse.Namespace) -> Results:
    results = Results()
    for number in range(1, args.rounds + 1):
        say(f"round {number} of {args.rounds}, load average {os.getloadavg()[0]:.1f}")
        with results.phase("spawn"):
            results.add(spawn=phases.spawn_loop(args.spawn_seconds))
        await round_pericles(args, results)
        if args.granian and (VENV_BIN / "granian").exists():
            await round_granian(args, results)
        round_scripts(args, results)
    return results


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="short runs, one round")
    parser.add_argument("--rounds", type=int, default=3, help="the table shows medians")
    parser.add_argument("--clients", type=int, default=32, help="creating clients")
    parser.add_argument("--payloads", type=int, default=2000, help="per e2e run")
    parser.add_argument("--warmup-payloads", type=int, default=200)
    parser.add_argument("--sustain-seconds", type=float, default=5.0, help="0 skips it")
    parser.add_argument("--latency-requests", type=int, default=300, help="one connection")
    parser.add_argument("--get-connections", type=int, default=64)
    parser.add_argument("--get-seconds", type=float, default=5.0)
    parser.add_argument("--spawn-seconds", type=float, default=3.0)
    parser.add_argument("--cli-runs", type=int, default=7, help="each, interleaved")
    parser.add_argument("--drain-bytes", type=int, default=1 << 30, help="0 skips it")
    parser.add_argument("--queries", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--sqlite", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--granian", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--json", type=Path, help="also write every value here")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.payloads, args.warmup_payloads = 1, 500, 100
        args.sustain_seconds, args.latency_requests, args.get_seconds = 2.0, 100, 2.0
        args.spawn_seconds, args.cli_runs, args.drain_bytes = 1.0, 3, 256 << 20
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    started = time.perf_counter()
    say(
        f"date {dt.date.today()}  source {source_version()}  cores {len(os.sched_getaffinity(0))}"
        f"  python {sys.version.split()[0]}  rounds {args.rounds}{' (quick)' if args.quick else ''}"
    )
    results = uvloop.run(run(args))
    say(f"\nmedians of {args.rounds} round(s); idle = the machine's idle CPU share in the phase")
    for line in table(results):
        say(line)
    say(f"total {time.perf_counter() - started:.0f}s, load average {os.getloadavg()[0]:.1f}")
    if args.json:
        args.json.write_bytes(orjson.dumps(dataclasses.asdict(results)))


if __name__ == "__main__":
    main()
