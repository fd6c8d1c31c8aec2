"""Output benchmarks: draining a payload that writes 1 GiB, and 200 SSE clients on one payload.

    .venv/bin/python bench/output.py

1. drain: `head -c 1GiB /dev/zero` (and 5 GiB) as a payload, timed from POST until it is
   terminal (long-poll), beside the same command into a pipe that `cat` drains, and writing
   to /dev/null, in the same round (the last two in alternating order); medians of
   `--repeat` rounds, the machine's idle share during each, the CPU seconds per GiB of the
   server against `cat`'s (steadier than wall time on shared cores), and how far the
   server's peak RSS (VmHWM) grew. `measure_drain()` returns the figures.
2. fan-out: one payload writes N bytes of text while 200 SSE clients follow it; delivered
   MB/s is the bytes all clients received over the time until the last one got the end.

Everything runs on 127.0.0.1 and every loop is bounded in count and time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import uvloop

from serverproc import ServerProcess, handler_serve_argv

MiB = 1024 * 1024
GiB = 1024 * MiB


def say(line: str = "") -> None:
    print(line, flush=True)


def say_all(*parts: object) -> None:
    print(*parts, flush=True)


def vm_value(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} for pid {pid}")


#: The producer in every kind of run: the same command, so only the reader differs.
def producer(size: int) -> list[str]:
    return ["head", "-c", str(size), "/dev/zero"]


def cpu_of(usage: resource.struct_rusage) -> float:
    return usage.ru_utime + usage.ru_stime


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds the process `pid` itself has used so far (not its children)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_times() -> tuple[int, int]:
    """The machine's (idle + iowait, all) jiffies so far, from /proc/stat."""
    fields = [int(f) for f in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return fields[3] + fields[4], sum(fields[:8])


class Idle:
    """The machine's idle share over a `with` block: what the other tenants left free."""

    def __enter__(self) -> Idle:
        self._start = cpu_times()
        return self

    def __exit__(self, *exc: object) -> None:
        idle, total = cpu_times()
        self.share = (idle - self._start[0]) / max(total - self._start[1], 1)


def direct_drain(size: int) -> float:
    """Seconds for the producer alone, writing to /dev/null."""
    started = time.perf_counter()
    with open(os.devnull, "wb") as sink:
        subprocess.run(producer(size), stdout=sink, check=True)
    return time.perf_counter() - started


def piped_drain(size: int) -> tuple[float, float, float]:
    """Seconds for the producer writing into a pipe that `cat` drains to /dev/null; and the
    CPU seconds of the producer and of `cat`.

    Any server that captures output reads it from a pipe, so this is the ceiling for one.
    Both run under this process, as the payload runs under the server; the pipe has the
    kernel's default size, as the payload's has before the server widens it.
    """
    read_end, write_end = os.pipe()
    started = time.perf_counter()
    with open(os.devnull, "wb") as sink:
        head = subprocess.Popen(producer(size), stdout=write_end)
        cat = subprocess.Popen(["cat"], stdin=read_end, stdout=sink)
    os.close(read_end)
    os.close(write_end)
    usage = {}
    for proc in (head, cat):
        _, status, usage[proc.pid] = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode:
            raise RuntimeError(f"{proc.args!r} exited {proc.returncode}")
    elapsed = time.perf_counter() - started
    return elapsed, cpu_of(usage[head.pid]), cpu_of(usage[cat.pid])


async def served_drain(client: httpx.AsyncClient, size: int) -> tuple[float, float]:
    """Seconds for the producer as a payload, from POST until it is terminal; and the
    payload's CPU seconds as the server counted them."""
    argv = producer(size)
    started = time.perf_counter()
    response = await client.post("/payloads", json={"cmd": argv[0], "params": argv[1:]})
    record = response.json()
    while record["status"] in ("pending", "working"):
        record = (await client.get(f"/payloads/{record['id']}", params={"wait": 300})).json()
    elapsed = time.perf_counter() - started
    if record["status"] != "finished" or record["stdout_bytes"] != size:
        raise RuntimeError(f"drain payload ended badly: {record}")
    return elapsed, record["cpu_user_seconds"] + record["cpu_system_seconds"]


async def drain_round(
    client: httpx.AsyncClient, pid: int, size: int, served_first: bool
) -> dict[str, float]:
    """One round: the producer to /dev/null, into a pipe `cat` drains, and as a payload;
    `served_first` alternates the order of the last two, so neither always runs second."""
    base = direct_drain(size)
    per_gib = GiB / size

    def piped() -> dict[str, float]:
        with Idle() as idle:
            seconds, head_cpu, cat_cpu = piped_drain(size)
        return {
            "pipe_cat_s": seconds,
            "pipe_idle_share": idle.share,
            "pipe_head_cpu_s_per_gib": head_cpu * per_gib,
            "cat_cpu_s_per_gib": cat_cpu * per_gib,
        }

    async def served() -> dict[str, float]:
        cpu = cpu_seconds(pid)
        with Idle() as idle:
            seconds, head_cpu = await served_drain(client, size)
        return {
            "served_s": seconds,
            "served_idle_share": idle.share,
            "served_head_cpu_s_per_gib": head_cpu * per_gib,
            # Steadier than wall time on shared cores: what the server spent on it.
            "server_cpu_s_per_gib": (cpu_seconds(pid) - cpu) * per_gib,
        }

    if served_first:
        figures = await served()
        figures |= piped()
    else:
        figures = piped()
        figures |= await served()
    return figures | {
        "direct_mb_s": size / 1e6 / base,
        "pipe_cat_mb_s": size / 1e6 / figures["pipe_cat_s"],
        "served_mb_s": size / 1e6 / figures["served_s"],
        "ratio_to_pipe": figures["pipe_cat_s"] / figures["served_s"],
        # The reader's CPU against `cat`'s: what the server adds over the plain copy.
        "cpu_ratio_to_cat": figures["server_cpu_s_per_gib"] / figures["cat_cpu_s_per_gib"],
    }


async def drain_figures(port: int, pid: int, size: int, rounds: int) -> dict[str, Any]:
    """`rounds` interleaved rounds of `drain_round` on the server at `port`: the median of
    each figure (a ratio's median is of the per-round ratios), and the growth of its peak RSS."""
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=900) as c:
        peak_before = vm_value(pid, "VmHWM")
        rss_before = vm_value(pid, "VmRSS")
        runs = [await drain_round(c, pid, size, served_first=i % 2 == 1) for i in range(rounds)]
        peak_after = vm_value(pid, "VmHWM")
    figures: dict[str, Any] = {key: statistics.median(r[key] for r in runs) for key in runs[0]}
    figures["bytes"] = size
    figures["rounds"] = runs
    figures["peak_rss_growth_mib"] = (peak_after - max(peak_before, rss_before)) / MiB
    return figures


def measure_drain(
    sizes: tuple[int, ...] = (GiB, 5 * GiB), rounds: int = 3
) -> dict[int, dict[str, Any]]:
    """Drain throughput through a default server against pipe + `cat`, same run, per size:
    medians of `rounds` (see `drain_round`). For bench/compare.py."""

    async def run() -> dict[int, dict[str, Any]]:
        with ServerProcess("pericles", handler_serve_argv()).start() as server:
            return {s: await drain_figures(server.port, server.pid, s, rounds) for s in sizes}

    return uvloop.run(run())


async def bench_drain(args: argparse.Namespace, server: ServerProcess) -> None:
    for size in args.drain_bytes:
        f = await drain_figures(server.port, server.pid, size, args.repeat)
        say(f"  {size / MiB:.0f} MiB, median of {args.repeat} interleaved rounds:")
        say(f"    direct to /dev/null:      {f['direct_mb_s']:8.0f} MB/s")
        say(
            f"    into a pipe, cat drains:  {f['pipe_cat_mb_s']:8.0f} MB/s"
            f"  (machine idle {f['pipe_idle_share']:.0%})"
        )
        say(
            f"    through the server:       {f['served_mb_s']:8.0f} MB/s"
            f"  (machine idle {f['served_idle_share']:.0%})"
        )
        say(f"    ratio to the pipe:        {f['ratio_to_pipe']:8.2f}  (target >= 0.9)")
        say_all(
            "    rounds (ratio to the pipe):",
            [round(r["ratio_to_pipe"], 2) for r in f["rounds"]],
        )
        say(
            f"    CPU s per GiB: server {f['server_cpu_s_per_gib']:.3f}, cat"
            f" {f['cat_cpu_s_per_gib']:.3f} (ratio {f['cpu_ratio_to_cat']:.2f}); producer"
            f" {f['served_head_cpu_s_per_gib']:.3f} as a payload,"
            f" {f['pipe_head_cpu_s_per_gib']:.3f} into cat's pipe"
        )
        say(f"    server peak RSS grew {f['peak_rss_growth_mib']:.1f} MiB (target < 50 MiB)")


async def follower(client: httpx.AsyncClient, url: str, ready: asyncio.Event) -> int:
    received = 0
    async with client.stream("GET", url) as response:
        ready.set()
        async for line in response.aiter_lines():
            if line.startswith('data: {"stream"'):
                received += len(json.loads(line[6:])["text"])
    return received


async def bench_fanout(args: argparse.Namespace, server: ServerProcess) -> None:
    size = args.fanout_bytes
    with tempfile.TemporaryDirectory() as tmp:
        gate = Path(tmp) / "gate"
        os.mkfifo(gate)
        script = f'read x < "$0"; head -c {size} /dev/zero | tr "\\0" x'
        limits = httpx.Limits(max_connections=args.clients + 10)
        url = f"http://127.0.0.1:{server.port}"
        async with httpx.AsyncClient(base_url=url, limits=limits, timeout=120) as client:
            response = await client.post(
                "/payloads", json={"cmd": "/bin/sh", "params": ["-c", script, str(gate)]}
            )
            events = f"/payloads/{response.json()['id']}/events"
            ready = [asyncio.Event() for _ in range(args.clients)]
            tasks = [asyncio.create_task(follower(client, events, r)) for r in ready]
            await asyncio.wait_for(asyncio.gather(*(r.wait() for r in ready)), 60)
            started = time.perf_counter()
            fd = os.open(gate, os.O_WRONLY)  # the readers are there: no wait
            os.write(fd, b"go\n")
            os.close(fd)
            received = await asyncio.wait_for(asyncio.gather(*tasks), 300)
            elapsed = time.perf_counter() - started
    total = sum(received)
    complete = sum(1 for r in received if r == size)
    say(
        f"  {args.clients} clients x {size / 1e6:.1f} MB:"
        f" delivered {total / 1e6 / elapsed:.0f} MB/s in {elapsed:.2f}s;"
        f" {complete}/{args.clients} got every byte"
    )


async def run(args: argparse.Namespace) -> None:
    say(f"date {time.strftime('%Y-%m-%d')}  cores {os.cpu_count()}")
    with ServerProcess("pericles", handler_serve_argv()).start() as server:
        say("\n1. drain from one payload's stdout")
        await bench_drain(args, server)
    if args.no_fanout:
        return
    argv = [*handler_serve_argv(), "--max-output", str(2 * args.fanout_bytes)]
    with ServerProcess("pericles", argv).start() as server:
        say(f"\n2. fan-out: one payload, {args.clients} SSE clients")
        await bench_fanout(args, server)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--drain-bytes", type=int, nargs="+", default=[GiB, 5 * GiB], help="one run per size"
    )
    parser.add_argument("--repeat", type=int, default=3, help="drain rounds; medians count")
    parser.add_argument("--no-fanout", action="store_true", help="skip the SSE fan-out")
    parser.add_argument("--fanout-bytes", type=int, default=1_000_000)
    parser.add_argument("--clients", type=int, default=200)
    uvloop.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
