"""What runs is exactly what the policy judged: argv[0], the hashed file, the cwd, no /proc.

The race tests flip a file or a link in a loop on a thread, for as long as a bounded batch
of payloads takes, and assert that nothing but the judged file ever ran, in the judged
directory.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import Server, is_terminal, start_server, wait_for_status

STORES = ("memory",)
CAT = os.path.realpath("/bin/cat")
ECHO = os.path.realpath("/bin/echo")
GOOD = b"#!/bin/sh\necho good\n"
EVIL = b"#!/bin/sh\necho EVIL\n"
RACE_PAYLOADS = 40


@pytest.fixture(scope="module")
def area(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("integrity")
    for name in ("bin", "allowed", "forbidden", "links"):
        (root / name).mkdir()
    (root / "allowed" / "data.txt").write_text("allowed\n")
    (root / "forbidden" / "data.txt").write_text("FORBIDDEN\n")
    (root / "bin" / "prog").write_bytes(GOOD)
    (root / "bin" / "prog").chmod(0o755)
    (root / "bin" / "script").write_bytes(GOOD)
    (root / "bin" / "script").chmod(0o755)
    # A caller's link named after another program: what runs must still call itself cat.
    (root / "links" / "tac").symlink_to(CAT)
    (root / "cwd").symlink_to(root / "allowed")
    (root / "policy.toml").write_text(
        f"""
[[rule]]
name = "cat"
cmd = "/bin/cat"
params = [{{regex = "/proc/self/cmdline|data.txt"}}]
cwd = ["{root}/allowed"]

[[rule]]
name = "prog"
cmd = "{root}/bin/prog"
sha256 = "{hashlib.sha256(GOOD).hexdigest()}"

[[rule]]
name = "script"
cmd = "{root}/bin/script"
sha256 = "{hashlib.sha256(GOOD).hexdigest()}"
cwd = ["{root}/allowed"]

[[rule]]
name = "echo"
cmd = "/bin/echo"
"""
    )
    return root


@pytest.fixture(scope="module")
def policed(area: Path) -> Iterator[Server]:
    srv = start_server("--policy", str(area / "policy.toml"))
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def pclient(policed: Server) -> Iterator[httpx.Client]:
    with policed.client() as c:
        yield c


def _output(client: httpx.Client, payload_id: str) -> str:
    return client.get(f"/payloads/{payload_id}/output").text


def _race(client: httpx.Client, flip: Callable[[], None], body: dict[str, Any]) -> list[str]:
    """Create payloads from `body` while `flip` runs in a loop; the outputs of those that ran."""
    stop = threading.Event()

    def flipper() -> None:
        while not stop.is_set():
            flip()

    thread = threading.Thread(target=flipper, daemon=True)
    thread.start()
    ids = []
    try:
        for _ in range(RACE_PAYLOADS):
            response = client.post("/payloads", json=body)
            assert response.status_code in (201, 403), response.text
            if response.status_code == 201:
                ids.append(response.json()["id"])
        records = [wait_for_status(client, i) for i in ids]
    finally:
        stop.set()
        thread.join(10)
    for record in records:
        assert is_terminal(record)
        assert record["status"] == "finished" or record["status"].startswith("error:start("), record
    return [_output(client, r["id"]) for r in records if r["status"] == "finished"]


def test_argv0_is_the_judged_file_not_the_callers_spelling(
    pclient: httpx.Client, area: Path
) -> None:
    for cmd in (str(area / "links" / "tac"), "/bin/../bin/cat", "cat"):
        response = pclient.post("/payloads", json={"cmd": cmd, "params": ["/proc/self/cmdline"]})
        assert response.status_code == 201, response.text
        record = wait_for_status(pclient, response.json()["id"])
        assert record["status"] == "finished"
        assert _output(pclient, record["id"]).split("\0")[0] == CAT


def test_a_pinned_file_swapped_after_the_check_never_runs(
    pclient: httpx.Client, area: Path
) -> None:
    prog = area / "bin" / "prog"
    spare = area / "bin" / "spare"
    turn = [0]

    def flip() -> None:
        # A new file each time (a new inode: no cached digest), renamed over the pinned one.
        turn[0] += 1
        spare.write_bytes(EVIL if turn[0] % 2 else GOOD)
        spare.chmod(0o755)
        spare.rename(prog)

    try:
        outputs = _race(pclient, flip, {"cmd": str(prog)})
    finally:
        prog.write_bytes(GOOD)
    assert outputs, "no payload ran at all: the race proved nothing"
    assert set(outputs) == {"good\n"}


def test_a_cwd_link_flipped_after_the_check_never_moves_the_payload(
    pclient: httpx.Client, area: Path
) -> None:
    link, spare = area / "cwd", area / "cwd-spare"
    turn = [0]

    def flip() -> None:
        turn[0] += 1
        if spare.is_symlink():
            spare.unlink()
        spare.symlink_to(area / ("forbidden" if turn[0] % 2 else "allowed"))
        spare.rename(link)

    try:
        outputs = _race(pclient, flip, {"cmd": "cat", "params": ["data.txt"], "cwd": str(link)})
    finally:
        if link.is_symlink():
            link.unlink()
        link.symlink_to(area / "allowed")
    assert outputs, "no payload ran at all: the race proved nothing"
    assert set(outputs) == {"allowed\n"}


def test_a_pinned_script_runs_from_its_open_file_in_its_open_cwd(
    pclient: httpx.Client, area: Path
) -> None:
    response = pclient.post(
        "/payloads", json={"cmd": str(area / "bin" / "script"), "cwd": str(area / "allowed")}
    )
    assert response.status_code == 201, response.text
    record = wait_for_status(pclient, response.json()["id"])
    assert record["status"] == "finished", record
    assert _output(pclient, record["id"]) == "good\n"


def _proc_paths(pid: int, area: Path) -> list[dict[str, Any]]:
    return [
        {"cmd": "/proc/self/exe"},
        {"cmd": f"/proc/{pid}/exe"},
        {"cmd": f"/proc/{pid}/root/bin/echo"},
        {"cmd": "/proc/self/root/usr/bin/echo"},
        {"cmd": "/proc/thread-self/root/bin/echo"},
        {"cmd": "echo", "env": {"PATH": f"/proc/{pid}/root/usr/bin"}},
        {"cmd": str(area / "proc-root") + "/bin/echo"},
        {"cmd": "/bin/echo", "cwd": "/proc/self/cwd"},
        {"cmd": "/bin/echo", "cwd": f"/proc/{pid}/cwd"},
        {"cmd": "/bin/echo", "cwd": f"/proc/{pid}/root/tmp"},
        {"cmd": "./echo", "cwd": f"/proc/{pid}/root/bin"},
    ]


@pytest.fixture(scope="module")
def proc_link(area: Path) -> Path:
    # A caller's own link into /proc: resolving it crosses the magic link all the same.
    link = area / "proc-root"
    link.symlink_to("/proc/self/root")
    return link


def test_proc_links_are_refused_under_a_policy(
    pclient: httpx.Client, policed: Server, area: Path, proc_link: Path
) -> None:
    before = len(pclient.get("/payloads").json())
    for body in _proc_paths(policed.pid, area):
        response = pclient.post("/payloads", json=body)
        assert response.status_code == 403, (body, response.text)
        reason = response.json()["reason"]
        # Under a policy, a caller's PATH is refused before any lookup on it.
        assert any(why in reason for why in ("/proc link", "not under", "env PATH")), reason
        answer = pclient.post("/payloads/check", json=body).json()
        assert answer["allowed"] is False
    assert len(pclient.get("/payloads").json()) == before


def test_proc_links_end_in_a_start_error_without_a_policy(
    client: httpx.Client, server: Server, area: Path, proc_link: Path
) -> None:
    for body in _proc_paths(server.pid, area):
        response = client.post("/payloads", json=body)
        assert response.status_code in (201, 422), (body, response.text)
        if response.status_code == 422:
            continue
        record = wait_for_status(client, response.json()["id"])
        assert record["status"].startswith("error:start("), (body, record)
        assert "/proc link" in record["status"], (body, record)


def test_copies_of_the_judged_programs_still_run(pclient: httpx.Client, area: Path) -> None:
    # The checks refuse only what they must: plain paths, links and relative names work.
    shutil.copy(area / "allowed" / "data.txt", area / "allowed" / "copy.txt")
    for cmd in ("/bin/echo", "echo", "/usr/bin/../bin/echo", ECHO):
        response = pclient.post("/payloads", json={"cmd": cmd, "params": ["hi"]})
        assert response.status_code == 201, response.text
        record = wait_for_status(pclient, response.json()["id"])
        assert record["status"] == "finished"
        assert _output(pclient, record["id"]) == "hi\n"


@pytest.mark.parametrize("pinned", [False, True], ids=["unpinned", "pinned"])
def test_a_file_replaced_while_pending_does_not_start(tmp_path: Path, pinned: bool) -> None:
    tool = tmp_path / "tool"
    tool.write_bytes(GOOD)
    tool.chmod(0o755)
    pin = f'sha256 = "{hashlib.sha256(GOOD).hexdigest()}"' if pinned else ""
    policy = tmp_path / "policy.toml"
    policy.write_text(
        f'[[rule]]\nname = "cat"\ncmd = "/bin/cat"\n\n'
        f'[[rule]]\nname = "tool"\ncmd = "{tool}"\n{pin}\n'
    )
    server = start_server("--policy", str(policy), "--max-running", "1")
    try:
        with server.client() as client:
            gate = client.post("/payloads", json={"cmd": "/bin/cat", "stdin": "pipe"}).json()
            wait_for_status(client, gate["id"], "working")
            queued = client.post("/payloads", json={"cmd": str(tool)})
            assert queued.status_code == 201, queued.text
            assert queued.json()["status"] == "pending"
            # Another file at the same path, admitted as the first: it must not run.
            spare = tmp_path / "spare"
            spare.write_bytes(EVIL)
            spare.chmod(0o755)
            spare.rename(tool)
            closed = client.post(f"/payloads/{gate['id']}/stdin", json={"close": True})
            assert closed.status_code == 200, closed.text
            record = wait_for_status(client, queued.json()["id"])
            assert record["status"].startswith(f"error:start('{tool}':refused by the command ")
            assert "is not the file admitted" in record["status"], record["status"]
            assert record.get("pid") is None
            assert _output(client, record["id"]) == ""
    finally:
        server.stop()
