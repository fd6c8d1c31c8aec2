"""The price of a sha256-pinned exec: end-to-end /bin/true payloads under three servers.

Run from the project root: `.venv/bin/python bench/pinned_exec.py` (`--help` for options).

- no policy: any command, started by path (the seed's way);
- `--allow /bin/true`: a policy rule without a pin, started by path, argv[0] the judged file;
- a rule with `sha256 = ...`: the open, hashed file is executed (posix_spawn of
  /proc/self/fd/N), after the runner re-opened it and compared it with what was judged.

Each server runs the same batch in rounds, interleaved (A B C A B C ...). Two figures per
server: the server's own CPU time per payload, from its first create to the last payload's
end (the median over rounds: what a pin costs, steady on a shared machine), and the best
end-to-end rate; read both as ratios to the no-policy server.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import tempfile
from pathlib import Path

import uvloop

from loadgen import check_run, connections, create_request, drive, wait_all_terminal
from serverproc import ServerProcess, cpu_seconds, handler_serve_argv

TRUE = os.path.realpath("/bin/true")


async def e2e_rate(server: ServerProcess, payloads: int, clients: int) -> tuple[float, float]:
    """The end-to-end rate and the server's CPU microseconds per payload."""
    async with connections("raw", server.port, clients) as conns:
        warm = await drive(conns, create_request, count=100, seconds=60, expect=201)
        check_run("warm-up", warm, 100)
        await wait_all_terminal(conns[0], 100, within=60)
        cpu_before = cpu_seconds(server.pid)[0]
        created = await drive(conns, create_request, count=payloads, seconds=120, expect=201)
        check_run("create", created, payloads)
        seen, records = await wait_all_terminal(conns[0], 100 + payloads, within=120)
        cpu = cpu_seconds(server.pid)[0] - cpu_before
    statuses = {r["status"] for r in records}
    if statuses != {"finished"}:
        raise RuntimeError(f"not every payload finished: {statuses}")
    return payloads / (seen - created.started), cpu / payloads * 1e6


async def run(args: argparse.Namespace, digest: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        policy = Path(tmp) / "pinned.toml"
        policy.write_text(f'[[rule]]\ncmd = "{TRUE}"\nsha256 = "{digest}"\n')
        keep = ["--keep-finished", str(10 * args.payloads)]
        servers = {
            "no policy": [*handler_serve_argv(), *keep],
            "--allow (path)": [*handler_serve_argv(), *keep, "--allow", TRUE],
            "sha256 pin (fd)": [*handler_serve_argv(), *keep, "--policy", str(policy)],
        }
        best: dict[str, float] = {}
        cpus: dict[str, list[float]] = {}
        for round_ in range(args.rounds):
            for name, argv in servers.items():
                with ServerProcess(name, argv).start() as server:
                    rate, cpu = await e2e_rate(server, args.payloads, args.clients)
                print(
                    f"  round {round_ + 1} {name:16} {rate:5.0f} payloads/s"
                    f"  server CPU {cpu:4.0f} us/payload",
                    flush=True,
                )
                best[name] = max(best.get(name, 0.0), rate)
                cpus.setdefault(name, []).append(cpu)
    median = {name: sorted(v)[len(v) // 2] for name, v in cpus.items()}
    print(f"\n{args.payloads} x {TRUE}, {args.clients} clients, {args.rounds} rounds")
    for name in servers:
        print(
            f"  {name:16} server CPU {median[name]:4.0f} us/payload"
            f" ({median[name] / median['no policy']:.2f}),"
            f" best {best[name]:4.0f} payloads/s ({best[name] / best['no policy']:.2f})"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--payloads", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2)
    digest = hashlib.sha256(Path(TRUE).read_bytes()).hexdigest()
    uvloop.run(run(parser.parse_args(), digest))


if __name__ == "__main__":
    main()
