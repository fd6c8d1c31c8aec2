"""Every process a payload starts ends with it: shapes of process trees x ways a payload ends.

Each payload starts descendants of one shape, which note their pids in a file, then either
exits (action "exit") or waits to be ended by cancel, timeout, forced delete, a server
shutdown or a crash of its server (kill -9, then a restart on the same store). Then no
descendant may be alive. With cgroups (the default where the server can create them) that
holds for every shape; with `--containment session` a process that calls setsid() leaves
the reach of its payload, as SECURITY.md says, and only the other shapes are checked.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.helpers import Server, start_server, wait_for_status, wait_until

STORES = ("sqlite",)

#: Shell that starts descendants of each shape and notes each one's pid in "$F".
SHAPES: dict[str, tuple[str, int]] = {
    "background": ("sleep 1000 & echo $! >> $F", 1),
    "setsid": ("setsid sh -c 'echo $$ >> \"$F\"; exec sleep 1000' &", 1),
    "setpgid": (
        "python3 -c 'import os, time; os.setpgid(0, 0); "
        'open(os.environ["F"], "a").write(f"{os.getpid()}\\n"); time.sleep(1000)\' &',
        1,
    ),
    "double_fork": ("sh -c 'sleep 1000 & echo $! >> \"$F\"' &", 1),
    "ignores_term": ("sh -c 'trap \"\" TERM; exec sleep 1000' & echo $! >> $F", 1),
    "fork_loop": (
        "i=0; while [ $i -lt 20 ]; do setsid sleep 1000 & echo $! >> $F; i=$((i+1)); done",
        20,
    ),
}
#: Shapes that leave the process group and the session: out of reach without cgroups.
ESCAPE_SESSION = {"setsid", "fork_loop"}
ACTIONS = ("cancel", "timeout", "delete", "exit", "shutdown", "crash")


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] not in "ZX"


def spec(shape: str, action: str, pids: Path) -> dict[str, object]:
    start, count = SHAPES[shape]
    end = "exit 0" if action == "exit" else "exec sleep 1000"
    script = (
        f"export F={pids}\n{start}\n"
        f'while [ "$(wc -l < $F 2>/dev/null || echo 0)" -lt {count} ]; do sleep 0.01; done\n{end}'
    )
    body: dict[str, object] = {"cmd": "/bin/sh", "params": ["-c", script], "kill_grace": 0.2}
    if action == "timeout":
        body["timeout"] = 1
    if shape == "fork_loop":
        body["limits"] = {"max_processes": 4096}  # the fork_exec path, under a process cap
    return body


def started_pids(pids: Path, count: int) -> list[int]:
    def ready() -> list[int] | None:
        try:
            lines = pids.read_text().split()
        except OSError:
            return None
        return [int(p) for p in lines] if len(lines) >= count else None

    return wait_until(ready, 10, f"{count} pid(s) in {pids}")


@contextlib.contextmanager
def reaping(found: list[int]) -> Iterator[None]:
    """Kill whatever a failed assertion leaves running, so one failure does not leak."""
    try:
        yield
    finally:
        for pid in found:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)


Started = list[tuple[str, str, list[int]]]  # (shape, payload id, descendants' pids)


def start_all(server: Server, tmp_path: Path, actions: tuple[str, ...]) -> dict[str, Started]:
    groups: dict[str, Started] = {}
    with server.client() as client:
        for action in actions:
            for shape, (_, count) in SHAPES.items():
                pids = tmp_path / f"{server.pid}-{shape}-{action}"
                response = client.post("/payloads", json=spec(shape, action, pids))
                assert response.status_code == 201, response.text
                found = started_pids(pids, count)
                groups.setdefault(action, []).append((shape, response.json()["id"], found))
    return groups


def end_by_request(client: httpx.Client, groups: dict[str, Started]) -> None:
    for _, payload_id, _ in groups["cancel"]:
        assert client.post(f"/payloads/{payload_id}/cancel").json()["status"] == "cancelled"
    for _, payload_id, _ in groups["delete"]:
        assert client.delete(f"/payloads/{payload_id}", params={"force": True}).is_success
    for _, payload_id, _ in groups["timeout"]:
        assert wait_for_status(client, payload_id)["status"] == "timeout"
    for _, payload_id, _ in groups["exit"]:
        assert wait_for_status(client, payload_id)["status"] == "finished"


def run_matrix(tmp_path: Path, containment: str) -> dict[tuple[str, str], int]:
    """Survivors per (shape, action) once each payload has ended."""
    store = f"sqlite:///{tmp_path / containment}.db"
    args = ("--store", store, "--containment", containment, "--max-running", "0")
    groups: dict[str, Started] = {}
    every: list[int] = []
    with reaping(every):
        # One server ends its payloads by request, then is killed -9 with the crash group.
        server = start_server(*args)
        try:
            groups.update(start_all(server, tmp_path, ("cancel", "timeout", "delete", "exit")))
            groups.update(start_all(server, tmp_path, ("crash",)))
            every += [pid for started in groups.values() for _, _, pids in started for pid in pids]
            with server.client() as client:
                end_by_request(client, groups)
        finally:
            server.stop(signal.SIGKILL)
        # Recovery on the same store kills what the crashed server left.
        server = start_server(*args)
        try:
            with server.client() as client:
                for _, payload_id, _ in groups["crash"]:
                    assert wait_for_status(client, payload_id)["status"] == "lost"
        finally:
            server.stop()
        # Another server is stopped cleanly with its payloads running.
        server = start_server("--containment", containment, "--max-running", "0")
        try:
            groups.update(start_all(server, tmp_path, ("shutdown",)))
            every += [pid for _, _, pids in groups["shutdown"] for pid in pids]
        finally:
            assert server.stop() == 0
    return {
        (shape, action): len([p for p in found if alive(p)])
        for action, started in groups.items()
        for shape, _, found in started
    }


@pytest.mark.parametrize("containment", ["cgroup", "session"])
def test_no_descendant_outlives_its_payload(tmp_path: Path, containment: str) -> None:
    survivors = run_matrix(tmp_path, containment)
    for (shape, action), count in sorted(survivors.items()):
        if containment == "cgroup" or shape not in ESCAPE_SESSION:
            assert count == 0, f"{shape} x {action}: {count} survivor(s) ({containment})"
