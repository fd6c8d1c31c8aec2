"""Output benchmarks: draining a payload that writes 1 GiB, and 200 SSE clients on one payload.

    .venv/bin/python bench/output.py

1. drain: `head -c 1GiB /dev/zero` as a payload, timed from POST until it is terminal
   (long-poll), beside the same command writing to /dev/null without the server, in the same
   run; and how far the server's peak RSS (VmHWM) grew.
2. fan-out: one payload writes N bytes of text while 200 SSE clients follow it; delivered
   MB/s is the bytes all clients received over the time until the last one got the end.

Everything runs on 127.0.0.1 and every loop is bounded in count and time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
import uvloop

from serverproc import ServerProcess, handler_serve_argv

MiB = 1024 * 1024


def say(line: str = "") -> None:
    print(line, flush=True)


def vm_value(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} for pid {pid}")


def direct_drain(size: int) -> float:
    """Seconds for the command alone, writing to /dev/null."""
    started = time.perf_counter()
    with open(os.devnull, "wb") as sink:
        subprocess.run(["head", "-c", str(size), "/dev/zero"], stdout=sink, check=True)
    return time.perf_counter() - started


def piped_drain(size: int) -> float:
    """Seconds for the command writing into a pipe that `cat` drains to /dev/null.

    Any server that captures output reads it from a pipe, so this is the ceiling for one.
    """
    started = time.perf_counter()
    subprocess.run(f"head -c {size} /dev/zero | cat > /dev/null", shell=True, check=True)
    return time.perf_counter() - started


async def served_drain(client: httpx.AsyncClient, size: int) -> float:
    """Seconds for the same command as a payload, from POST until it is terminal."""
    started = time.perf_counter()
    response = await client.post(
        "/payloads", json={"cmd": "head", "params": ["-c", str(size), "/dev/zero"]}
    )
    record = response.json()
    while record["status"] in ("pending", "working"):
        record = (await client.get(f"/payloads/{record['id']}", params={"wait": 300})).json()
    elapsed = time.perf_counter() - started
    if record["status"] != "finished" or record["stdout_bytes"] != size:
        raise RuntimeError(f"drain payload ended badly: {record}")
    return elapsed


async def bench_drain(args: argparse.Namespace, server: ServerProcess) -> None:
    size = args.drain_bytes
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}", timeout=330) as c:
        peak_before = vm_value(server.pid, "VmHWM")
        rss_before = vm_value(server.pid, "VmRSS")
        runs = []
        for _ in range(args.repeat):
            base = direct_drain(size)
            piped = piped_drain(size)
            served = await served_drain(c, size)
            runs.append((base, piped, served))
        peak_after = vm_value(server.pid, "VmHWM")
    base = min(r[0] for r in runs)
    piped = min(r[1] for r in runs)
    served = min(r[2] for r in runs)
    mb = size / 1e6
    say(f"  direct to /dev/null:      {mb / base:8.0f} MB/s  (best of {args.repeat})")
    say(f"  into a pipe, cat drains:  {mb / piped:8.0f} MB/s")
    say(
        f"  through the server:       {mb / served:8.0f} MB/s  ratio {base / served:.2f} to"
        f" /dev/null (target >= 0.5), {piped / served:.2f} to the pipe"
    )
    say(
        f"  server peak RSS grew {(peak_after - max(peak_before, rss_before)) / MiB:.1f} MiB"
        f" (VmHWM {peak_before / MiB:.1f} -> {peak_after / MiB:.1f} MiB; target < 50 MiB)"
    )


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
        say(f"\n1. drain {args.drain_bytes / MiB:.0f} MiB from one payload's stdout")
        await bench_drain(args, server)
    argv = [*handler_serve_argv(), "--max-output", str(2 * args.fanout_bytes)]
    with ServerProcess("pericles", argv).start() as server:
        say(f"\n2. fan-out: one payload, {args.clients} SSE clients")
        await bench_fanout(args, server)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--drain-bytes", type=int, default=1024 * MiB)
    parser.add_argument("--repeat", type=int, default=3, help="drain runs; the best counts")
    parser.add_argument("--fanout-bytes", type=int, default=1_000_000)
    parser.add_argument("--clients", type=int, default=200)
    uvloop.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
