"""What a named action costs over a raw payload: creates per second, same server, same run.

Run from the project root: `.venv/bin/python bench/actions.py` (`--help` for the options).

One server, started with an actions file whose action `true` renders `/bin/true N` from an
integer argument. Rounds alternate `POST /payloads {"cmd": "/bin/true", "params": ["N"]}`
(the baseline) and `POST /actions/true/run {"args": {"n": N}}`, each timed from the first
request until every answer is in, waiting between rounds until nothing is pending or
running. The figure is the ratio of the best action round to the best raw round, and the
same for creates per CPU second of the server (steadier on a shared machine).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import uvloop

from loadgen import CLIENT_KINDS, RunResult, check_run, connections, drive, wait_none_active
from serverproc import ServerProcess, handler_serve_argv

ACTIONS = """
[[action]]
name = "true"
cmd = "/bin/true"
params = ["{n}"]
[action.args.n]
type = "integer"
minimum = 0
"""


def raw_request(i: int) -> tuple[str, str, bytes | None]:
    return "POST", "/payloads", b'{"cmd": "/bin/true", "params": ["%d"]}' % i


def action_request(i: int) -> tuple[str, str, bytes | None]:
    return "POST", "/actions/true/run", b'{"args": {"n": %d}}' % i


async def run(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        conf = Path(tmp) / "actions.toml"
        conf.write_text(ACTIONS)
        argv = [*handler_serve_argv(), "--actions", str(conf), "--log-level", "warning"]
        server = ServerProcess("handler-serve --actions", argv)
        with server.start():
            best: dict[str, RunResult] = {}
            # One warm-up round of each kind, not counted, then alternate.
            for round_ in range(2 + args.rounds * 2):
                kind = ("raw", "action")[round_ % 2]
                make = raw_request if kind == "raw" else action_request
                # New connections each round: idle ones close after --keep-alive-timeout.
                async with connections(args.client, server.port, args.clients) as conns:
                    result = await drive(
                        conns,
                        make,
                        count=args.payloads,
                        seconds=120,
                        expect=201,
                        server_pid=server.pid,
                    )
                    check_run(kind, result, args.payloads)
                    await wait_none_active(conns[0], within=120)
                rate, per_cpu = result.rate, result.per_server_cpu
                print(f"{kind:6} {rate:8.0f} creates/s {per_cpu:8.0f} per server CPU second")
                if round_ >= 2 and (kind not in best or result.rate > best[kind].rate):
                    best[kind] = result
    raw, action = best["raw"], best["action"]
    print(
        f"best: raw {raw.rate:.0f}/s, action {action.rate:.0f}/s, "
        f"ratio {action.rate / raw.rate:.2f}; "
        f"per server CPU second: raw {raw.per_server_cpu:.0f}, action "
        f"{action.per_server_cpu:.0f}, ratio {action.per_server_cpu / raw.per_server_cpu:.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--payloads", type=int, default=2000, help="creates per round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of each kind")
    parser.add_argument("--clients", type=int, default=16, help="concurrent connections")
    parser.add_argument("--client", choices=CLIENT_KINDS, default="raw")
    uvloop.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
