"""End-to-end throughput with the sqlite store, against the memory store in the same run.

Run from the project root: `.venv/bin/python bench/store_throughput.py` (`--help` for options).

For each store, a fresh `handler-serve` is driven by concurrent keep-alive clients creating
`/bin/true` payloads; a run is timed from the first POST until no payload is pending or
working, and until the last 201 on its own. The stores alternate over several rounds so
that drift of the machine hits both, and the best round of each is compared: the figure is
the ratio sqlite / memory, never a pass/fail on wall-clock time. `sqlite-full` is the same
file with `?synchronous=full` (every commit synced to disk), for reference.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time

import orjson
import uvloop

from serverproc import HOST, ServerProcess, handler_serve_argv

TARGET = 0.7
CREATE = b'{"cmd": "/bin/true", "params": []}'
ACTIVE = "/payloads?status=pending&status=working&status=paused&limit=1"


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


async def create_all(conns: list[Connection], count: int) -> None:
    left = [count]

    async def worker(conn: Connection) -> None:
        while left[0] > 0:
            left[0] -= 1
            status, body = await conn.request("POST", "/payloads", CREATE)
            if status != 201:
                raise RuntimeError(f"POST /payloads answered {status}: {body[:200]!r}")

    await asyncio.gather(*(worker(conn) for conn in conns))


async def wait_idle(conn: Connection, within: float) -> None:
    """Until no payload is pending, working or paused."""
    deadline = time.perf_counter() + within
    while time.perf_counter() < deadline:
        status, body = await conn.request("GET", ACTIVE)
        if status == 200 and not orjson.loads(body):
            return
        await asyncio.sleep(0.005)
    raise TimeoutError(f"payloads still active after {within:.0f}s")


async def one_run(store: str, args: argparse.Namespace) -> tuple[float, float]:
    """Payloads per second: created (until the last 201) and ended (until all have ended)."""
    argv = [*handler_serve_argv(), "--store", store]
    server = ServerProcess(store.partition(":")[0], argv)
    with server.start():
        conns = await asyncio.gather(*(Connection.open(server.port) for _ in range(args.clients)))
        try:
            await create_all(conns, args.warmup)
            await wait_idle(conns[0], args.timeout)
            started = time.perf_counter()
            await create_all(conns, args.payloads)
            created = time.perf_counter() - started
            await wait_idle(conns[0], args.timeout)
            elapsed = time.perf_counter() - started
        finally:
            await asyncio.gather(*(conn.close() for conn in conns))
    payloads: int = args.payloads
    return payloads / created, payloads / elapsed


#: The stores compared, by name: sqlite as shipped, and with every commit synced to disk.
STORES = {
    "memory": "memory://",
    "sqlite": "sqlite:///{dir}/{name}.db",
    "sqlite-full": "sqlite:///{dir}/{name}.db?synchronous=full",
}


async def run(args: argparse.Namespace) -> None:
    rates: dict[str, list[tuple[float, float]]] = {kind: [] for kind in STORES}
    with tempfile.TemporaryDirectory(prefix="pericles-bench-") as tmp:
        for round_number in range(1, args.rounds + 1):
            for kind, url in STORES.items():
                url = url.format(dir=tmp, name=f"{kind}-{round_number}")
                created, ended = await one_run(url, args)
                rates[kind].append((created, ended))
                print(
                    f"round {round_number} {kind:11}: created {created:6.0f}/s,"
                    f" ended {ended:6.0f}/s",
                    flush=True,
                )
    print()
    print(f"{args.payloads} /bin/true payloads, {args.clients} keep-alive clients;")
    print(f"payloads/s, best of {args.rounds} rounds (median in brackets):")
    memory_best = max(ended for _, ended in rates["memory"])
    for kind, runs in rates.items():
        creates = [c for c, _ in runs]
        ends = [e for _, e in runs]
        print(
            f"  {kind:11} created {max(creates):6.0f} ({statistics.median(creates):.0f})"
            f"  end to end {max(ends):6.0f} ({statistics.median(ends):.0f})"
            f"  ratio to memory {max(ends) / memory_best:.2f}"
        )
    ratio = max(ended for _, ended in rates["sqlite"]) / memory_best
    met = "met" if ratio >= TARGET else "MISSED"
    print(f"sqlite / memory, end to end: {ratio:.2f} (target >= {TARGET}: {met})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--payloads", type=int, default=2000, help="timed payloads per run")
    parser.add_argument("--warmup", type=int, default=200, help="untimed payloads first")
    parser.add_argument("--clients", type=int, default=32, help="concurrent connections")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each store")
    parser.add_argument("--timeout", type=float, default=120, help="seconds a run may take")
    uvloop.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
