"""The CLI phase of `bench/compare.py` alone, with CPU time: `pericles --help`, `ls` and
`run --wait -- /bin/true` against a real `handler-serve`, each against
`python -c 'import httpx'` timed in the same run, interleaved.

Wall time is what a user waits for; on a shared machine it also holds the time spent
waiting for a core, so the CPU time of each command (user + system, its own process only)
is printed too.

    .venv/bin/python bench/cli_startup.py --runs 9

Run `python -m compileall src` first when PYTHONDONTWRITEBYTECODE is set: without cached
bytecode every start compiles Pericles' modules again (an installed package has it).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time

from compare import pericles_argv
from compare_phases import TRUE
from serverproc import VENV_BIN, ServerProcess


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=9, help="each, interleaved; medians")
    args = parser.parse_args(argv)
    pericles = str(VENV_BIN / "pericles")
    cases = {
        "httpx": [sys.executable, "-c", "import httpx"],
        "help": [pericles, "--help"],
        "ls": [pericles, "ls"],
        "run": [pericles, "run", "--wait", "--", TRUE],
    }
    wall: dict[str, list[float]] = {name: [] for name in cases}
    cpu: dict[str, list[float]] = {name: [] for name in cases}
    with ServerProcess("pericles", pericles_argv("memory://", 10_000)).start() as server:
        env = {**os.environ, "PERICLES_URL": f"http://127.0.0.1:{server.port}"}
        for _ in range(args.runs):
            for name, command in cases.items():
                started, used = time.perf_counter(), _cpu()
                subprocess.run(command, check=True, stdout=subprocess.DEVNULL, env=env, timeout=60)
                wall[name].append((time.perf_counter() - started) * 1000)
                cpu[name].append((_cpu() - used) * 1000)
    base_wall, base_cpu = statistics.median(wall["httpx"]), statistics.median(cpu["httpx"])
    print(f"medians of {args.runs} interleaved runs; load average {os.getloadavg()[0]:.1f}")
    for name in cases:
        w, c = statistics.median(wall[name]), statistics.median(cpu[name])
        ratios = f"{w / base_wall:5.2f}x   cpu {c:6.1f} ms {c / base_cpu:5.2f}x"
        print(f"{name:6} wall {w:6.1f} ms {ratios}")


if __name__ == "__main__":
    main()
