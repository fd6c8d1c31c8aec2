"""The server's own CPU time per payload and per read: the figure that holds on a busy machine.

Run from the project root: `.venv/bin/python bench/server_cpu.py` (`--help` for options).
Rates swing with what else runs on the cores; the CPU seconds the server process itself
spends per unit of work do not. To compare two versions of the code, run it once as
installed and once with `PYTHONPATH=<other checkout>/src` (the server inherits it), in
alternating rounds.

- per payload: from the first of `--payloads` `POST /payloads` (`/bin/true`) until every
  record is terminal (creating, spawning, reaping, recording, and the clients' polling);
- per read: over `--gets` `GET /payloads/{id}`.
"""

from __future__ import annotations

import argparse
import statistics

import orjson
import uvloop

from loadgen import check_run, connections, create_request, drive, wait_all_terminal
from serverproc import ServerProcess, cpu_seconds, handler_serve_argv


async def one_round(args: argparse.Namespace) -> tuple[float, float]:
    """Server CPU microseconds per payload and per GET, for one fresh server."""
    argv = [*handler_serve_argv(), "--keep-finished", str(10 * args.payloads)]
    with ServerProcess("pericles", argv).start() as server:
        async with connections("raw", server.port, args.clients) as conns:
            warm = await drive(conns, create_request, count=200, seconds=60, expect=201)
            check_run("warm-up", warm, 200)
            await wait_all_terminal(conns[0], 200, within=60)
            ids: list[str] = []
            start = cpu_seconds(server.pid)[0]
            created = await drive(
                conns,
                create_request,
                count=args.payloads,
                seconds=120,
                expect=201,
                sink=lambda body: ids.append(orjson.loads(body)["id"]),
            )
            check_run("create", created, args.payloads)
            await wait_all_terminal(conns[0], 200 + args.payloads, within=120)
            after_posts = cpu_seconds(server.pid)[0]
            path = f"/payloads/{ids[0]}"
            gets = await drive(conns, lambda _: ("GET", path, None), count=args.gets, seconds=60)
            check_run("get", gets)
            after_gets = cpu_seconds(server.pid)[0]
    per_payload = (after_posts - start) / args.payloads * 1e6
    return per_payload, (after_gets - after_posts) / gets.ok * 1e6


async def run(args: argparse.Namespace) -> None:
    payloads, gets = [], []
    for round_ in range(args.rounds):
        per_payload, per_get = await one_round(args)
        payloads.append(per_payload)
        gets.append(per_get)
        print(f"  round {round_ + 1}: {per_payload:.0f} us/payload, {per_get:.1f} us/GET")
    print(
        f"median of {args.rounds}: {statistics.median(payloads):.0f} us/payload,"
        f" {statistics.median(gets):.1f} us/GET (server CPU)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--payloads", type=int, default=1500)
    parser.add_argument("--gets", type=int, default=20_000)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    uvloop.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
