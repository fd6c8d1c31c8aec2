"""What containment costs: /bin/true payloads end to end, cgroup v2 against group + session.

Run from the project root: `.venv/bin/python bench/containment.py [--payloads N --rounds R]`.
Servers of both kinds are started alternately in the same run (same machine, same load), each
takes `--payloads` `/bin/true` payloads from 16 keep-alive clients, and the time from the
first POST until none is pending or working gives payloads/s. The figure that matters is the
ratio of the medians: cgroup / session.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import socket
import statistics
import subprocess
import sys
import time

BODY = b'{"cmd": "/bin/true"}'
POST = (
    b"POST /payloads HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    b"Content-Length: %d\r\n\r\n%s" % (len(BODY), BODY)
)
ACTIVE = b"GET /payloads?status=pending&status=working&limit=1 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def answer(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    length = re.search(rb"(?i)content-length: *(\d+)", head)
    assert length is not None
    return head, await reader.readexactly(int(length.group(1)))


async def load(port: int, payloads: int, clients: int = 16) -> float:
    async def one(count: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for _ in range(count):
            writer.write(POST)
            head, _ = await answer(reader)
            assert head.startswith(b"HTTP/1.1 201"), head
        writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(one(payloads // clients) for _ in range(clients)))
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    while True:
        writer.write(ACTIVE)
        _, body = await answer(reader)
        if body.strip() == b"[]":
            break
        await asyncio.sleep(0.005)
    writer.close()
    return (payloads // clients * clients) / (time.perf_counter() - started)


def measure(kind: str, payloads: int, before: str | None) -> float:
    port = free_port()
    serve = [sys.executable, "-c", "from pericles.cli.serve import main; main()"]
    argv = [*serve, "--port", str(port), "--log-level", "warning"]
    env = dict(os.environ)
    if kind == "before":  # the code before containment, from a `git archive` of it
        env["PYTHONPATH"] = f"{before}/src"
    else:
        argv += ["--containment", kind]
    server = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port)).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        asyncio.run(load(port, payloads // 10))  # warm-up, untimed
        return asyncio.run(load(port, payloads))
    finally:
        server.terminate()
        server.wait(30)


def measure_containment(
    payloads: int = 2000, rounds: int = 3, before: str | None = None
) -> dict[str, float]:
    """payloads/s with cgroups and with group + session (and the code in `before`, if
    given), servers started alternately; medians of `rounds`, and the ratios. For
    bench/compare.py."""
    rates: dict[str, list[float]] = {"cgroup": [], "session": []}
    if before:
        rates["before"] = []
    for _ in range(rounds):
        for kind in rates:
            rates[kind].append(measure(kind, payloads, before))
            print(f"{kind}: {rates[kind][-1]:.0f} payloads/s", flush=True)
    figures = {f"{kind}_per_s": statistics.median(values) for kind, values in rates.items()}
    figures["cgroup_to_session"] = figures["cgroup_per_s"] / figures["session_per_s"]
    if before:
        figures["cgroup_to_before"] = figures["cgroup_per_s"] / figures["before_per_s"]
        figures["session_to_before"] = figures["session_per_s"] / figures["before_per_s"]
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--payloads", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--before", help="a source tree of the code before (git archive main | tar -x -C DIR)"
    )
    args = parser.parse_args()
    figures = measure_containment(args.payloads, args.rounds, args.before)
    for key, value in figures.items():
        if key.endswith("_per_s"):
            print(f"median {key[: -len('_per_s')]}: {value:.0f} payloads/s")
    print(f"cgroup / session: {figures['cgroup_to_session']:.3f}")
    if args.before:
        print(f"cgroup / before: {figures['cgroup_to_before']:.3f}")
        print(f"session / before: {figures['session_to_before']:.3f}")


if __name__ == "__main__":
    main()
