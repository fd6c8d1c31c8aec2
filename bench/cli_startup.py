"""The CLI phase of `bench/compare.py` alone: `pericles --help`, `ls` and `run --wait --
/bin/true` against a real `handler-serve`, each against `python -c 'import httpx'` timed in
the same run, interleaved.

    .venv/bin/python bench/cli_startup.py --runs 9
"""

from __future__ import annotations

import argparse

import compare_phases as phases
from compare import pericles_argv
from serverproc import ServerProcess


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=9, help="each, interleaved; medians")
    args = parser.parse_args(argv)
    args.cli_runs = args.runs
    with ServerProcess("pericles", pericles_argv("memory://", 10_000)).start() as server:
        times = phases.cli(args, server.port)
    base = times["cli_httpx"]
    print(f"medians of {args.runs} interleaved runs")
    for name, value in times.items():
        print(f"{name:10} {value:7.1f} ms  {value / base:5.2f}x import httpx")


if __name__ == "__main__":
    main()
