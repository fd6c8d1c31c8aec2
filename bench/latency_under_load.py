"""GET /payloads/{id} latency with 1,000 `sleep 10` payloads running, beside none running.

Starts its own server on 127.0.0.1 (port 0, read from uvicorn's startup line), measures
p50/p99 of one-record reads while idle, starts 1,000 sleeps at once, measures the same
reads while they run, and prints both with their ratio. Target: loaded p99 <= 3x idle p99.

    .venv/bin/python bench/latency_under_load.py [--payloads 1000] [--requests 3000]
"""

from __future__ import annotations

import argparse
import http.client
import json
import re
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

_STARTED = re.compile(r"Uvicorn running on http://[^:]+:(\d+)")


def start_server() -> tuple[subprocess.Popen[str], int]:
    exe = shutil.which("handler-serve", path=str(Path(sys.executable).parent))
    if exe is None:
        raise SystemExit("handler-serve is not installed beside this Python")
    argv = [exe, "--port", "0", "--max-running", "0", "--log-level", "info"]
    server = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
    )
    assert server.stdout is not None
    deadline = time.monotonic() + 30
    for line in server.stdout:
        if match := _STARTED.search(line):
            # Keep draining the log (one access line per request) so the server never blocks.
            threading.Thread(target=server.stdout.read, daemon=True).start()
            return server, int(match.group(1))
        if time.monotonic() > deadline:
            break
    server.kill()
    raise SystemExit("the server did not start")


def request(
    conn: http.client.HTTPConnection, method: str, path: str, body: object = None
) -> dict[str, Any]:
    payload = json.dumps(body).encode() if body is not None else None
    conn.request(method, path, body=payload)
    response = conn.getresponse()
    data = response.read()
    if response.status >= 300:
        raise RuntimeError(f"{method} {path}: {response.status} {data[:200]!r}")
    result: dict[str, Any] = json.loads(data)
    return result


def latencies(conn: http.client.HTTPConnection, path: str, count: int) -> list[float]:
    samples = []
    for _ in range(count):
        start = time.perf_counter()
        conn.request("GET", path)
        conn.getresponse().read()
        samples.append(time.perf_counter() - start)
    return samples


def percentiles(samples: list[float]) -> tuple[float, float]:
    cuts = statistics.quantiles(samples, n=100, method="inclusive")
    return cuts[49] * 1000, cuts[98] * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--payloads", type=int, default=1000)
    parser.add_argument("--requests", type=int, default=3000)
    args = parser.parse_args()
    server, port = start_server()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        probe = request(conn, "POST", "/payloads", {"cmd": "/bin/sleep", "params": ["300"]})
        path = f"/payloads/{probe['id']}"
        latencies(conn, path, 200)  # warm up
        idle = percentiles(latencies(conn, path, args.requests))

        started = time.monotonic()
        ids = [
            request(conn, "POST", "/payloads", {"cmd": "/bin/sleep", "params": ["10"]})["id"]
            for _ in range(args.payloads)
        ]
        created = time.monotonic() - started
        working = sum(request(conn, "GET", f"/payloads/{i}")["status"] == "working" for i in ids)
        loaded = percentiles(latencies(conn, path, args.requests))
        still = sum(request(conn, "GET", f"/payloads/{i}")["status"] == "working" for i in ids)
        elapsed = time.monotonic() - started
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(60)

    print(f"created {args.payloads} sleep-10 payloads in {created:.2f}s")
    print(f"working when measuring: {working} at start, {still} at end ({elapsed:.1f}s in)")
    print(f"GET {args.requests} x /payloads/{{id}}   p50 ms   p99 ms")
    print(f"  idle                      {idle[0]:6.3f}   {idle[1]:6.3f}")
    print(f"  {args.payloads} running             {loaded[0]:6.3f}   {loaded[1]:6.3f}")
    print(f"  ratio loaded/idle         {loaded[0] / idle[0]:6.2f}   {loaded[1] / idle[1]:6.2f}")
    print(f"target p99 ratio <= 3: {'met' if loaded[1] <= 3 * idle[1] else 'NOT met'}")


if __name__ == "__main__":
    main()
