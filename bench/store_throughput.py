"""Throughput with the sqlite store, against the memory store in the same run.

Run from the project root: `.venv/bin/python bench/store_throughput.py` (`--help` for options).
`bench/compare.py` calls `measure()`, which returns the figures as a dict.

Two phases per store, each on a fresh `handler-serve` (access log, metrics and a policy on,
as shipped: `--allow /bin/true`), driven by concurrent keep-alive clients:

- end to end: `/bin/true` payloads, timed from the first POST until no payload is pending or
  working (and until the last 201, "created");
- POST only: the same POSTs while one `/bin/sleep` holds the only slot (`--max-running 1`),
  so every payload waits in the queue: what creating costs alone, which for a durable store
  includes the commit each 201 waits for.

The server's own CPU time per payload is read from /proc around each phase: on shared cores
it holds up better than the rates. The stores alternate within each round so that drift of
the machine hits them alike; each round gives a ratio sqlite / memory, and the figure is the
median of those (and of the rates) over the rounds, never a pass/fail on wall-clock time.
`sqlite-full` is the same file with `?synchronous=full` (every commit synced to disk), for
reference.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import statistics
import tempfile
import time

import orjson
import uvloop

from serverproc import HOST, ServerProcess, cpu_seconds, handler_serve_argv

#: Issue P17, goal 8: the sqlite store at no less than this share of the memory store's rate.
TARGET = 0.8
CREATE = b'{"cmd": "/bin/true", "params": []}'
HOLD = b'{"cmd": "/bin/sleep", "params": ["600"]}'
ACTIVE = "/payloads?status=pending&status=working&status=paused&limit=1"

#: The stores compared, by name: sqlite as shipped, and with every commit synced to disk.
STORES = {
    "memory": "memory://",
    "sqlite": "sqlite:///{dir}/{name}.db",
    "sqlite-full": "sqlite:///{dir}/{name}.db?synchronous=full",
}


@dataclasses.dataclass(frozen=True)
class Options:
    payloads: int = 2000
    #: POST-only phases are short (creating runs ~10x faster than running): more of them.
    post_payloads: int = 6000
    warmup: int = 200
    clients: int = 32
    rounds: int = 3
    timeout: float = 120.0
    stores: tuple[str, ...] = tuple(STORES)
    #: Also measure creating alone (payloads queued behind a held slot).
    post_only: bool = True
    #: `--keep-finished` for the servers: below the payloads run, every payload that ends
    #: evicts the oldest (a long-running server's steady state). None: the server's default.
    keep_finished: int | None = None


class Connection:
    """One keep-alive HTTP/1.1 connection; it reads Content-Length bodies, all we are sent."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    @classmethod
    async def open(cls, port: int) -> Connection:
        return cls(*await asyncio.open_connection(HOST, port))

    async def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        head = f"{method} {path} HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: {len(body)}\r\n"
        self._writer.write(head.encode() + b"Content-Type: application/json\r\n\r\n" + body)
        response = await self._reader.readuntil(b"\r\n\r\n")
        start = response.lower().index(b"\r\ncontent-length:") + 17
        length = int(response[start : response.index(b"\r\n", start)])
        return int(response[9:12]), await self._reader.readexactly(length)

    async def close(self) -> None:
        self._writer.close()
        await self._writer.wait_closed()


async def create_all(conns: list[Connection], count: int, body: bytes = CREATE) -> None:
    left = [count]

    async def worker(conn: Connection) -> None:
        while left[0] > 0:
            left[0] -= 1
            status, answer = await conn.request("POST", "/payloads", body)
            if status != 201:
                raise RuntimeError(f"POST /payloads answered {status}: {answer[:200]!r}")

    await asyncio.gather(*(worker(conn) for conn in conns))


async def wait_until(conn: Connection, path: str, within: float, *, empty: bool) -> None:
    """Until `GET path` answers an empty list (or, with `empty=False`, a non-empty one)."""
    deadline = time.perf_counter() + within
    while time.perf_counter() < deadline:
        status, body = await conn.request("GET", path)
        if status == 200 and (not orjson.loads(body)) == empty:
            return
        await asyncio.sleep(0.005)
    raise TimeoutError(f"GET {path} still {'non-' if empty else ''}empty after {within:.0f}s")


async def wait_idle(conn: Connection, within: float) -> None:
    """Until no payload is pending, working or paused (bench/callback_throughput.py uses it)."""
    await wait_until(conn, ACTIVE, within, empty=True)


@dataclasses.dataclass(frozen=True)
class Phase:
    """One timed phase on one server: payloads per second, and its CPU per payload."""

    rate: float
    #: Until the last 201 (end to end only: the POSTs overlap the runs).
    created: float
    #: Server CPU microseconds per payload (its own threads; children not counted).
    cpu_us: float


class Server:
    """A handler-serve on one store, with `clients` connections open to it."""

    def __init__(self, store: str, options: Options, *extra: str) -> None:
        argv = [*handler_serve_argv(), "--allow", "/bin/true", "--store", store, *extra]
        if options.keep_finished is not None:
            argv += ["--keep-finished", str(options.keep_finished)]
        self.process = ServerProcess(store.partition(":")[0], argv)
        self.options = options

    async def __aenter__(self) -> list[Connection]:
        self._started = self.process.start()
        self._started.__enter__()
        port = self.process.port
        self.conns = await asyncio.gather(
            *(Connection.open(port) for _ in range(self.options.clients))
        )
        return self.conns

    async def __aexit__(self, *exc: object) -> None:
        try:
            await asyncio.gather(*(conn.close() for conn in self.conns))
        finally:
            self._started.__exit__(None, None, None)

    def cpu(self) -> float:
        return cpu_seconds(self.process.pid)[0]


async def end_to_end(store: str, options: Options) -> Phase:
    server = Server(store, options)
    async with server as conns:
        await create_all(conns, options.warmup)
        await wait_idle(conns[0], options.timeout)
        cpu = server.cpu()
        started = time.perf_counter()
        await create_all(conns, options.payloads)
        created = time.perf_counter() - started
        await wait_idle(conns[0], options.timeout)
        elapsed = time.perf_counter() - started
        cpu = server.cpu() - cpu
    count = options.payloads
    return Phase(count / elapsed, count / created, cpu / count * 1e6)


async def post_only(store: str, options: Options) -> Phase:
    total = options.warmup + options.post_payloads
    # One slot, held: every /bin/true waits in the queue. The door holds POSTs beyond its
    # depth until the queue is seen stalled (one second); the warm-up gets it past that.
    extra = ("--allow", "/bin/sleep", "--max-running", "1", "--max-pending", str(total + 10))
    server = Server(store, options, *extra)
    async with server as conns:
        status, answer = await conns[0].request("POST", "/payloads", HOLD)
        if status != 201:
            raise RuntimeError(f"POST /payloads answered {status}: {answer[:200]!r}")
        await wait_until(conns[0], "/payloads?status=working&limit=1", 30, empty=False)
        await create_all(conns, options.warmup)
        cpu = server.cpu()
        started = time.perf_counter()
        await create_all(conns, options.post_payloads)
        elapsed = time.perf_counter() - started
        cpu = server.cpu() - cpu
    count = options.post_payloads
    return Phase(count / elapsed, count / elapsed, cpu / count * 1e6)


def say(line: str = "") -> None:
    print(line, flush=True)


async def measure(options: Options = Options(), echo: bool = False) -> dict[str, float]:
    """Median figures over the rounds, by key: `{store}_{phase}` payloads/s,
    `{store}_{phase}_cpu_us` server CPU per payload, `{store}_{phase}_ratio` the median of
    each round's rate over memory's (phase: `e2e`, `created`, `post`)."""
    phases = {"e2e": end_to_end, "post": post_only} if options.post_only else {"e2e": end_to_end}
    runs: dict[str, list[float]] = {}

    def keep(key: str, value: float) -> None:
        runs.setdefault(key, []).append(value)

    with tempfile.TemporaryDirectory(prefix="pericles-bench-") as tmp:
        for round_number in range(1, options.rounds + 1):
            for phase, run in phases.items():
                rates: dict[str, Phase] = {}
                for kind in options.stores:
                    url = STORES[kind].format(dir=tmp, name=f"{kind}-{phase}-{round_number}")
                    rates[kind] = got = await run(url, options)
                    keep(f"{kind}_{phase}", got.rate)
                    keep(f"{kind}_{phase}_cpu_us", got.cpu_us)
                    if phase == "e2e":
                        keep(f"{kind}_created", got.created)
                    if echo:
                        say(
                            f"round {round_number} {phase:4} {kind:11}: {got.rate:6.0f}/s"
                            f" (created {got.created:6.0f}/s), {got.cpu_us:5.0f} us CPU/payload"
                        )
                base = rates.get("memory")
                for kind, got in rates.items():
                    if base is not None and kind != "memory":
                        keep(f"{kind}_{phase}_ratio", got.rate / base.rate)
                        keep(f"{kind}_{phase}_cpu_ratio", got.cpu_us / base.cpu_us)
                        if phase == "e2e":
                            keep(f"{kind}_created_ratio", got.created / base.created)
    return {key: statistics.median(values) for key, values in runs.items()}


def report(figures: dict[str, float], options: Options) -> None:
    say()
    say(f"{options.payloads} /bin/true payloads end to end, {options.post_payloads} POST only,")
    say(f"{options.clients} keep-alive clients,")
    say(f"medians of {options.rounds} rounds (ratios: each round's sqlite / memory):")
    names = {"e2e": "end to end", "created": "201s while running", "post": "POST only"}
    for phase, name in names.items():
        for kind in options.stores:
            rate = figures.get(f"{kind}_{phase}")
            if rate is None:
                continue
            line = f"  {name:18} {kind:11} {rate:6.0f}/s"
            cpu = figures.get(f"{kind}_{phase}_cpu_us")
            if cpu is not None:
                line += f", {cpu:5.0f} us server CPU/payload"
            ratio = figures.get(f"{kind}_{phase}_ratio")
            if ratio is not None:
                line += f", ratio to memory {ratio:.2f}"
                cpu_ratio = figures.get(f"{kind}_{phase}_cpu_ratio")
                if cpu_ratio is not None:
                    line += f" (CPU {cpu_ratio:.2f}x)"
            say(line)
    for phase in ("e2e", "post"):
        ratio = figures.get(f"sqlite_{phase}_ratio")
        if ratio is not None:
            met = "met" if ratio >= TARGET else "MISSED"
            say(f"sqlite / memory, {names[phase]}: {ratio:.2f} (target >= {TARGET}: {met})")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    defaults = Options()
    parser.add_argument("--payloads", type=int, default=defaults.payloads, help="timed per run")
    parser.add_argument(
        "--post-payloads", type=int, default=defaults.post_payloads, help="timed, POST only"
    )
    parser.add_argument("--warmup", type=int, default=defaults.warmup, help="untimed first")
    parser.add_argument("--clients", type=int, default=defaults.clients, help="connections")
    parser.add_argument("--rounds", type=int, default=defaults.rounds, help="runs of each store")
    parser.add_argument("--timeout", type=float, default=defaults.timeout, help="seconds a run")
    parser.add_argument(
        "--stores", default=",".join(STORES), help=f"comma-separated, of {', '.join(STORES)}"
    )
    parser.add_argument("--no-post-only", action="store_true", help="end to end only")
    parser.add_argument(
        "--keep-finished", type=int, help="the servers' --keep-finished (evictions when low)"
    )
    args = parser.parse_args()
    stores = tuple(name for name in args.stores.split(",") if name)
    unknown = set(stores) - set(STORES)
    if unknown:
        parser.error(f"unknown stores {sorted(unknown)}")
    options = Options(
        args.payloads,
        args.post_payloads,
        args.warmup,
        args.clients,
        args.rounds,
        args.timeout,
        stores,
        not args.no_post_only,
        args.keep_finished,
    )
    figures = uvloop.run(measure(options, echo=True))
    report(figures, options)


if __name__ == "__main__":
    main()
