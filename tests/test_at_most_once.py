"""A payload never runs twice: kill -9 the server around the spawns, restart, count runs.

Each payload appends its own token and pid to a file when it runs. Servers are killed at
many points while payloads are being created and started (after the k-th 201, k varying),
then a server restarts on the same store. Every token may appear at most once, every
payload the crashed server started ends `lost` with none of its processes left, and the
ones it never started run once.
"""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import httpx

from tests.helpers import Server, is_terminal, start_server, wait_until

STORES = ("sqlite",)
ROUNDS = 8
PER_ROUND = 12


def alive(token: str, pid: int) -> bool:
    """Whether payload `token`'s process `pid` lives: its environment names the token, so a
    reused pid does not count."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
        with open(f"/proc/{pid}/environ", "rb") as f:
            environ = f.read().split(b"\0")
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] not in "ZX" and f"RUN_TOKEN={token}".encode() in environ


async def create_then_kill(server: Server, ran: Path, round_no: int, kill_after: int) -> int:
    """Create PER_ROUND payloads at once; kill -9 the server at the `kill_after`-th 201."""
    created = 0
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:

        async def one(i: int) -> None:
            nonlocal created
            token = f"r{round_no}p{i}"
            script = f"echo {token} $$ >> {ran}; exec sleep 1000"
            body = {"cmd": "/bin/sh", "params": ["-c", script], "env": {"RUN_TOKEN": token}}
            try:
                response = await client.post("/payloads", json=body)
            except httpx.TransportError:
                return
            if response.status_code == 201:
                created += 1
                if created == kill_after:
                    os.kill(server.pid, signal.SIGKILL)

        await asyncio.gather(*(one(i) for i in range(PER_ROUND)))
    return created


def runs(ran: Path) -> list[tuple[str, int]]:
    lines = ran.read_text().split("\n") if ran.exists() else []
    return [(token, int(pid)) for token, pid in (line.split() for line in lines if line)]


def test_kill_9_around_the_spawn_never_runs_a_payload_twice(tmp_path: Path) -> None:
    args = ("--store", f"sqlite:///{tmp_path / 'p.db'}", "--max-running", "0")
    ran = tmp_path / "ran"
    created = 0
    for round_no in range(ROUNDS):
        server = start_server(*args)
        kill_after = 1 + round_no * (PER_ROUND - 1) // (ROUNDS - 1)
        try:
            created += asyncio.run(create_then_kill(server, ran, round_no, kill_after))
        finally:
            server.stop(signal.SIGKILL)
        before = runs(ran)
        server = start_server(*args)
        try:
            with server.client() as client:
                records = client.get("/payloads").json()
                # Requeued ones start now; the others ended lost in recovery.
                wait_until(
                    lambda: all(
                        is_terminal(r) or r["status"] == "working"
                        for r in client.get("/payloads").json()
                    ),
                    10,
                    "every payload working or ended",
                )
                after = runs(ran)
                tokens = [token for token, _ in after]
                assert len(tokens) == len(set(tokens)), f"round {round_no}: a payload ran twice"
                for token, pid in before:
                    assert not alive(token, pid), f"round {round_no}: {token} outlived its server"
                lost = [r for r in client.get("/payloads").json() if r["status"] == "lost"]
                assert len(records) >= len(lost)
        finally:
            assert server.stop() == 0
        assert not [token for token, pid in runs(ran) if alive(token, pid)]
    assert created >= ROUNDS
