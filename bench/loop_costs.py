"""What two of the loop's per-payload steps cost, in-process, against a baseline each.

Run from the project root: `.venv/bin/python bench/loop_costs.py` (`--help` for options).

1. Opening a payload's executable (`process.open_target` and its close, as the runner does
   at start, the digest cached) against the least any open of it takes: `os.open`,
   `os.fstat` and `os.close` of the same file.
2. A lifecycle log line through the server's handler (`logs.TurnHandler`, the plain
   formatter, records without caller, thread or process) against the standard library's
   `logging.StreamHandler` with its default records, both writing to a file, `--per-turn`
   lines per turn of an asyncio loop.

Best of `--repeat` runs of `--count` calls each; figures in microseconds per call, and the
ratio to the baseline of the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import tempfile
import time
from collections.abc import Awaitable, Callable
from typing import TextIO

from pericles import logs, process

EXE = "/bin/true"


async def best(call: Callable[[], Awaitable[None]], count: int, repeat: int) -> float:
    """Microseconds per call of `call`: the best of `repeat` runs of `count` calls."""
    for _ in range(count // 10):
        await call()
    fastest = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        for _ in range(count):
            await call()
        fastest = min(fastest, (time.perf_counter() - started) / count)
    return fastest * 1e6


async def opens(count: int, repeat: int) -> tuple[float, float]:
    cache = process.DigestCache()

    async def target() -> None:
        (await process.open_target(EXE, None, None, cache)).close()

    async def plain() -> None:
        fd = os.open(EXE, os.O_RDONLY | os.O_CLOEXEC)
        os.fstat(fd)
        os.close(fd)

    return await best(target, count, repeat), await best(plain, count, repeat)


async def log_lines(count: int, repeat: int, per_turn: int, stream: TextIO) -> tuple[float, float]:
    log = logging.getLogger("bench.lines")
    log.propagate = False
    log.setLevel(logging.INFO)

    async def lines() -> None:
        for _ in range(per_turn):
            log.info(
                "payload %s %s (cmd %r, pid %s, exit code %s)", "f" * 32, "finished", EXE, 1, 0
            )
        await asyncio.sleep(0)  # the end of a turn

    # The standard handler first, with the records as logging makes them by default; then
    # the server's, set up as the entry points set it up (which changes those defaults).
    figures = []
    for handler in (logging.StreamHandler(stream), None):
        if handler is None:
            logs.configure("info", "plain")
            handler = logs.TurnHandler(stream)
            handler.setFormatter(logs.PlainFormatter())
        else:
            handler.setFormatter(logging.Formatter(logs.PLAIN))
        log.handlers[:] = [handler]
        figures.append(await best(lines, count // per_turn, repeat) / per_turn)
        handler.flush()
    return figures[1], figures[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=4000, help="calls per run")
    parser.add_argument("--repeat", type=int, default=5, help="runs; the best is kept")
    parser.add_argument("--per-turn", type=int, default=8, help="log lines per loop turn")
    args = parser.parse_args()
    target, plain = asyncio.run(opens(args.count, args.repeat))
    print(f"open_target + close    {target:7.2f} us   os.open+fstat+close {plain:6.2f} us")
    print(f"  ratio {target / plain:.2f}")
    with tempfile.TemporaryFile("w") as stream:
        ours, stdlib = asyncio.run(log_lines(args.count, args.repeat, args.per_turn, stream))
    print(f"log line, TurnHandler  {ours:7.2f} us   StreamHandler       {stdlib:6.2f} us")
    print(f"  ratio {ours / stdlib:.2f}")


if __name__ == "__main__":
    main()
