"""End-to-end throughput with one callback per payload, against none in the same run.

Run from the project root: `.venv/bin/python bench/callback_throughput.py` (`--help`).

For each variant a fresh `handler-serve` is driven by concurrent keep-alive clients creating
`/bin/true` payloads (as `store_throughput.py`). With `callback`, the server has
`--callback-url` pointing at a receiver in this process (answering 204 at once, counting
deliveries), so every payload's end is one signed POST. A run is timed from the first POST
until no payload is active ("end to end"), and until the receiver has every delivery
("delivered"). The variants alternate over rounds; the best of each is compared: the figure
is the ratio callback / none, never a pass/fail on wall-clock time.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

import uvloop

from serverproc import HOST, ServerProcess, handler_serve_argv
from store_throughput import Connection, create_all, wait_idle


class Receiver:
    """A minimal keep-alive HTTP/1.1 receiver: reads each POST, answers 204, counts."""

    def __init__(self) -> None:
        self.count = 0
        self.port = 0

    async def start(self) -> asyncio.Server:
        server = await asyncio.start_server(self._serve, HOST, 0)
        self.port = server.sockets[0].getsockname()[1]
        return server

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                start = head.lower().index(b"\r\ncontent-length:") + 17
                await reader.readexactly(int(head[start : head.index(b"\r\n", start)]))
                self.count += 1
                writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()


async def one_run(receiver: Receiver | None, args: argparse.Namespace) -> tuple[float, float]:
    """Payloads per second: until none is active, and until every delivery arrived."""
    argv = [*handler_serve_argv(), "--log-level", "warning"]
    if receiver is not None:
        url = f"http://{HOST}:{receiver.port}/hook"
        argv += ["--callback-url", url, "--callback-allow", HOST, "--callback-secret", "k"]
    server = ServerProcess("callback" if receiver else "none", argv)
    with server.start():
        conns = await asyncio.gather(*(Connection.open(server.port) for _ in range(args.clients)))
        try:
            await create_all(conns, args.warmup)
            await wait_idle(conns[0], args.timeout)
            base = receiver.count if receiver else 0
            started = time.perf_counter()
            await create_all(conns, args.payloads)
            await wait_idle(conns[0], args.timeout)
            ended = time.perf_counter() - started
            deadline = time.perf_counter() + args.timeout
            while receiver is not None and receiver.count - base < args.payloads:
                if time.perf_counter() > deadline:
                    raise TimeoutError(f"{receiver.count - base} deliveries arrived")
                await asyncio.sleep(0.002)
            delivered = time.perf_counter() - started
        finally:
            await asyncio.gather(*(conn.close() for conn in conns))
    payloads: int = args.payloads
    return payloads / ended, payloads / delivered


async def run(args: argparse.Namespace) -> None:
    receiver = Receiver()
    listening = await receiver.start()
    rates: dict[str, list[tuple[float, float]]] = {"none": [], "callback": []}
    try:
        for round_number in range(1, args.rounds + 1):
            for kind in rates:
                ended, delivered = await one_run(receiver if kind == "callback" else None, args)
                rates[kind].append((ended, delivered))
                print(
                    f"round {round_number} {kind:8}: ended {ended:6.0f}/s,"
                    f" delivered {delivered:6.0f}/s",
                    flush=True,
                )
    finally:
        listening.close()
    print()
    print(f"{args.payloads} /bin/true payloads, {args.clients} keep-alive clients;")
    print(f"payloads/s, best of {args.rounds} rounds (median in brackets):")
    none_best = max(e for e, _ in rates["none"])
    for kind, runs in rates.items():
        ends = [e for e, _ in runs]
        delivers = [d for _, d in runs]
        print(
            f"  {kind:8} end to end {max(ends):6.0f} ({statistics.median(ends):.0f})"
            f"  all delivered {max(delivers):6.0f} ({statistics.median(delivers):.0f})"
            f"  end to end vs none {max(ends) / none_best:.2f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--payloads", type=int, default=2000, help="timed payloads per run")
    parser.add_argument("--warmup", type=int, default=200, help="untimed payloads first")
    parser.add_argument("--clients", type=int, default=32, help="concurrent connections")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each variant")
    parser.add_argument("--timeout", type=float, default=120, help="seconds a run may take")
    uvloop.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
