"""The spawner thread: starts run at most once, a cancelled start never runs or is killed,
and nothing is left running once it is closed. Real processes, session containment (the
cgroup path runs through real servers in test_containment.py)."""

from __future__ import annotations

import asyncio
import errno
import os
import threading
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from pericles import process
from pericles.process import procfs
from pericles.process import spawner as spawner_module
from pericles.process.cgroup import Stage
from pericles.process.spawn import Launch, Opened, execute
from tests.helpers import start_server, wait_for_status, wait_until

WAIT = 30.0


def job(argv: list[str]) -> Launch:
    return process.prepare(argv[0], argv[1:], {"PATH": process.DEFAULT_PATH})


def gated(
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[threading.Event, threading.Event, list[int]]:
    """Make the spawner thread wait at `gate` before each start; `entered` is set when it
    waits there; `pids` lists what it started."""
    gate, entered = threading.Event(), threading.Event()
    pids: list[int] = []
    real = execute

    def gated_execute(launch: Launch, opened: Opened, stage: Stage | None = None) -> int:
        entered.set()
        assert gate.wait(WAIT)
        pid = real(launch, opened, stage)
        pids.append(pid)
        return pid

    monkeypatch.setattr(spawner_module, "execute", gated_execute)
    return gate, entered, pids


def gone(pid: int) -> bool:
    """Whether `pid` is no longer a process (neither running nor an unreaped zombie)."""
    return not Path(f"/proc/{pid}").exists()


async def until(check: Callable[[], bool], within: float = WAIT) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def test_a_start_runs_on_the_thread_and_is_watched_on_the_loop(tmp_path: Path) -> None:
    out: list[bytes] = []

    async def main() -> process.Exit:
        spawner = process.Spawner()
        try:
            loop = asyncio.get_running_loop()
            start = job(["/bin/sh", "-c", "echo hi; exit 3"])
            started = await spawner.launch(start)
            child = process.watch(start, started, lambda _, d: out.append(d), loop)
            return await asyncio.wait_for(child.exited, WAIT)
        finally:
            spawner.close()

    ended = asyncio.run(main())
    assert ended.exit_code == 3
    assert b"".join(out) == b"hi\n"


def test_a_start_cancelled_before_the_thread_takes_it_never_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate, entered, pids = gated(monkeypatch)
    marker = tmp_path / "ran"

    async def main() -> process.Launched:
        spawner = process.Spawner(threads=1)
        try:
            first = asyncio.create_task(spawner.launch(job(["/bin/true"])))
            await until(entered.is_set)  # the thread holds the first start
            second = asyncio.create_task(spawner.launch(job(["/bin/touch", str(marker)])))
            await until(lambda: spawner.queued == 1)  # behind the first, not taken yet
            second.cancel()
            with pytest.raises(asyncio.CancelledError):
                await second
            gate.set()
            return await first
        finally:
            gate.set()
            spawner.close()

    started = asyncio.run(main())
    os.waitpid(started.pid, 0)
    assert len(pids) == 1  # only the first ever started
    assert not marker.exists()


def test_a_start_cancelled_while_the_thread_runs_it_is_killed_and_reaped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate, entered, pids = gated(monkeypatch)

    async def main() -> None:
        spawner = process.Spawner(threads=1)
        try:
            task = asyncio.create_task(spawner.launch(job(["/bin/sleep", "300"])))
            await until(entered.is_set)
            task.cancel()
            gate.set()  # it starts after its waiter gave up
            with pytest.raises(asyncio.CancelledError):
                await task
            await until(lambda: len(pids) == 1)
            await until(lambda: gone(pids[0]))
        finally:
            gate.set()
            spawner.close()

    asyncio.run(main())


def test_closing_ends_queued_starts_and_refuses_new_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate, entered, pids = gated(monkeypatch)
    marker = tmp_path / "ran"

    async def main() -> None:
        spawner = process.Spawner(threads=1)
        first = asyncio.create_task(spawner.launch(job(["/bin/sleep", "300"])))
        await until(entered.is_set)
        queued = asyncio.create_task(spawner.launch(job(["/bin/touch", str(marker)])))
        await until(lambda: spawner.queued == 1)

        # close() waits for the thread: let the start it holds go on once close() began.
        def release_once_closing() -> None:
            wait_until(lambda: spawner.closed, WAIT, "close() to begin")
            gate.set()

        threading.Thread(target=release_once_closing).start()
        spawner.close()
        with pytest.raises(process.SpawnFailed) as queued_failed:
            await queued
        assert queued_failed.value.errno == errno.ECANCELED
        # The start under way when it closed is killed: nobody would watch it.
        with pytest.raises(process.SpawnFailed):
            await first
        await until(lambda: len(pids) == 1 and gone(pids[0]))
        with pytest.raises(process.SpawnFailed):
            await spawner.launch(job(["/bin/touch", str(marker)]))

    asyncio.run(main())
    assert not marker.exists()


def cgroup_of(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            return f.read().strip().rsplit("/", 1)[-1]
    except OSError:
        return None


def session_members(sid: int) -> list[int]:
    """Live processes in session `sid`."""
    return [p.pid for p in procfs.processes() if p.session == sid and p.state not in "ZX"]


@pytest.mark.slow
def test_payloads_started_at_once_keep_each_its_own_descendants(tmp_path: Path) -> None:
    """Many payloads that fork at once, started by both spawner threads: every process of
    each ends up in that payload's own cgroup, none in another's (the default containment)."""
    forks = 3
    script = " ".join(["sleep 1000 &"] * forks) + " wait"
    server = start_server("--max-running", "0")
    try:
        with server.client() as client:
            check_each_keeps_its_own(client, script, forks)
    finally:
        assert server.stop() == 0


def all_forked(pid: int, forks: int) -> Callable[[], list[int] | None]:
    """The processes of the session `pid` leads, once it and its `forks` are all there."""

    def check() -> list[int] | None:
        members = session_members(pid)
        return members if len(members) == forks + 1 else None

    return check


def check_each_keeps_its_own(client: httpx.Client, script: str, forks: int) -> None:
    assert client.get("/readyz").json()["containment"] == "cgroup"
    ids = [
        client.post("/payloads", json={"cmd": "/bin/sh", "params": ["-c", script]}).json()["id"]
        for _ in range(16)
    ]
    try:
        records = [wait_for_status(client, i, "working") for i in ids]
        for record in records:
            members = wait_until(all_forked(record["pid"], forks), 10, f"forks of {record['id']}")
            assert {cgroup_of(p) for p in members} == {record["id"]}
    finally:
        for payload_id in ids:
            client.post(f"/payloads/{payload_id}/cancel")
        for payload_id in ids:
            wait_for_status(client, payload_id, None, timeout=20)
