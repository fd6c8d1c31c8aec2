"""The sqlite store across restarts: kill -9, pending and running payloads, output, retention."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import (
    Server,
    group_members,
    handler_serve,
    pericles_path,
    post,
    running_server,
    start_server,
    wait_for_status,
    wait_until,
)

#: Every test here names its own database file.
STORES = ("sqlite",)


def store_args(db: Path, *more: str) -> tuple[str, ...]:
    return ("--store", f"sqlite:///{db}", *more)


def start_on(db: Path) -> subprocess.CompletedProcess[str]:
    """handler-serve on `db`, for a start that must be refused: it returns once refused."""
    return subprocess.run(
        [handler_serve(), "--port", "0", *store_args(db)],
        capture_output=True,
        text=True,
        timeout=30,
    )


def live_members(pgrp: int) -> list[int]:
    # Killed orphans belong to init, which may never reap them here: zombies do not count.
    return [p.pid for p in group_members(pgrp) if p.state != "Z"]


def kill_9(server: Server) -> None:
    server.stop(signal.SIGKILL)


def records_by_id(client: httpx.Client) -> dict[str, dict[str, Any]]:
    records: list[dict[str, Any]] = client.get("/payloads").json()
    ids = [r["id"] for r in records]
    assert len(ids) == len(set(ids)), "a payload is listed twice"
    return {r["id"]: r for r in records}


@pytest.mark.slow
def test_every_201_survives_kill_9(tmp_path: Path) -> None:
    db = tmp_path / "pericles.db"
    server = start_server(*store_args(db))
    acknowledged: list[str] = []
    attempts = 0
    lock = threading.Lock()
    stop = threading.Event()

    def client_loop() -> None:
        nonlocal attempts
        with server.client() as client:
            while not stop.is_set():
                with lock:
                    attempts += 1
                try:
                    response = client.post("/payloads", json={"cmd": "/bin/true"})
                except httpx.TransportError:
                    return  # the server is gone: this answer never came
                assert response.status_code == 201, response.text
                with lock:
                    acknowledged.append(response.json()["id"])

    threads = [threading.Thread(target=client_loop) for _ in range(32)]
    try:
        for thread in threads:
            thread.start()
        wait_until(lambda: len(acknowledged) >= 400, 60, "400 payloads created")
        kill_9(server)  # while the 32 clients are still creating
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
        server.stop()
    with running_server(*store_args(db)) as again, again.client() as client:
        listed = records_by_id(client)
    assert set(acknowledged) <= set(listed), "a payload answered 201 is gone"
    assert len(acknowledged) == len(set(acknowledged))
    # A record committed just before the kill may not have had its 201 sent: never more.
    assert len(listed) <= attempts


def test_pending_payloads_resume_and_working_ones_are_lost(tmp_path: Path) -> None:
    db = tmp_path / "pericles.db"
    args = store_args(db, "--max-running", "1")
    server = start_server(*args, "--log-level", "debug")
    try:
        with server.client() as client:
            # A group whose leader has a child: both must be gone after the restart.
            script = "echo started; /bin/sleep 300 & exec /bin/sleep 300"
            working = post(client, "/bin/sh", "-c", script)
            pgrp = wait_for_status(client, working["id"], "working")["pid"]
            wait_until(lambda: len(live_members(pgrp)) == 2, 10, "both sleeps to run")
            saved = f"saved the output of payload {working['id']}"
            wait_until(lambda: saved in server.log(), 10, "its output to be saved")
            first = post(client, "/bin/echo", "first")
            second = post(client, "/bin/echo", "second")
            urgent = post(client, "/bin/echo", "urgent", priority=5)
            assert client.get(f"/payloads/{second['id']}").json()["status"] == "pending"
        kill_9(server)
    finally:
        server.stop()
    assert len(live_members(pgrp)) == 2, "the payload's processes outlive a kill -9"

    with running_server(*args) as again, again.client() as client:
        lost = wait_for_status(client, working["id"], "lost")
        assert lost["finished_at"] is not None
        # `pericles wait` hands on the outcome of every terminal status, `lost` included.
        waited = subprocess.run(
            [pericles_path(), "--server", again.url, "wait", working["id"]],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert waited.returncode == 125
        assert waited.stderr.endswith("was lost: its server stopped while it ran\n")
        assert client.get(f"/payloads/{working['id']}/output").text == "started\n"
        wait_until(lambda: not live_members(pgrp), 10, "the lost payload's processes to die")
        done = [wait_for_status(client, p["id"]) for p in (urgent, first, second)]
        assert [r["status"] for r in done] == ["finished"] * 3
        started = [r["started_at"] for r in done]
        assert started == sorted(started), "queued again out of order"
        output = client.get(f"/payloads/{first['id']}/output")
        assert output.text == "first\n"


def test_output_and_records_survive_a_restart(tmp_path: Path) -> None:
    db = tmp_path / "pericles.db"
    args = store_args(db, "--max-output", "1000")
    script = "printf 'out1\\n'; printf 'err1\\n' >&2; head -c 5000 /dev/zero | tr '\\0' x"
    with running_server(*args) as server, server.client() as client:
        small = post(client, "/bin/echo", "hello")
        big = post(client, "/bin/sh", "-c", script)
        before = {p["id"]: wait_for_status(client, p["id"]) for p in (small, big)}
        reads = {
            (p["id"], stream, offset): client.get(
                f"/payloads/{p['id']}/output", params={"stream": stream, "offset": offset}
            )
            for p in (small, big)
            for stream in ("stdout", "stderr", "both")
            for offset in (0, 3, 700)
        }
    with running_server(*args) as server, server.client() as client:
        for payload_id, record in before.items():
            assert client.get(f"/payloads/{payload_id}").json() == record
        for (payload_id, stream, offset), first in reads.items():
            again = client.get(
                f"/payloads/{payload_id}/output", params={"stream": stream, "offset": offset}
            )
            assert again.content == first.content
            for header in ("Pericles-Output-Dropped", "Pericles-Output-Next-Offset"):
                assert again.headers.get(header) == first.headers.get(header)
    assert reads[(big["id"], "stdout", 0)].headers["Pericles-Output-Dropped"] == "4005"


def test_retention_deletes_from_the_file(tmp_path: Path) -> None:
    db = tmp_path / "pericles.db"
    with running_server(*store_args(db)) as server, server.client() as client:
        created = [post(client, "/bin/sh", "-c", "head -c 65536 /dev/urandom") for _ in range(40)]
        ended = [wait_for_status(client, record["id"]) for record in created]
    last_four = {r["id"] for r in sorted(ended, key=lambda r: str(r["finished_at"]))[-4:]}
    full = db.stat().st_size
    assert full > 40 * 65536
    # Restarted with a smaller --keep-finished: the oldest 36 go, at once, from the file too.
    with running_server(*store_args(db, "--keep-finished", "4")) as server:
        with server.client() as client:
            kept = {r["id"] for r in client.get("/payloads").json()}
        assert kept == last_four
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("SELECT count(*) FROM payloads").fetchone()[0] == 4
        outputs = conn.execute("SELECT count(DISTINCT payload_id) FROM output_chunks")
        assert outputs.fetchone()[0] == 4
    finally:
        conn.close()
    # The freed pages went back to the file system (incremental vacuum).
    assert db.stat().st_size < full / 4


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p.write_bytes(b"this is not a database, " * 100), "file is not a database"),
        (lambda p: p.mkdir(), "unable to open database file"),
        (lambda p: None, "does not exist"),
    ],
    ids=["corrupt", "a-directory", "no-directory"],
)
def test_an_unusable_database_is_refused_in_one_line(
    tmp_path: Path, make: Any, message: str
) -> None:
    db = tmp_path / "pericles.db"
    make(db)
    if message == "does not exist":
        db = tmp_path / "missing" / "pericles.db"
    result = start_on(db)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert message in result.stderr
    assert str(db) in result.stderr


@pytest.mark.slow
def test_a_second_server_cannot_share_the_file(tmp_path: Path) -> None:
    db = tmp_path / "pericles.db"
    with running_server(*store_args(db)):
        result = start_on(db)
    assert result.returncode == 1
    assert f"another server is using {db}" in result.stderr


def test_a_queued_payload_with_secrets_does_not_start_without_them(tmp_path: Path) -> None:
    db = tmp_path / "pericles.db"
    args = store_args(db, "--max-running", "1")
    server = start_server(*args)
    try:
        with server.client() as client:
            blocker = post(client, "/bin/sleep", "300")
            wait_for_status(client, blocker["id"], "working")
            response = client.post(
                "/payloads",
                json={
                    "cmd": "/bin/sh",
                    "params": ["-c", 'echo "$TOKEN"'],
                    "secret_env": {"TOKEN": "s3cret-value"},
                },
            )
            assert response.status_code == 201, response.text
            queued = response.json()
            assert queued["status"] == "pending"
            assert queued["secret_env_names"] == ["TOKEN"]
        kill_9(server)
    finally:
        server.stop()
    with running_server(*args) as again, again.client() as client:
        done = wait_for_status(client, queued["id"])
        reason = "its secret_env values are not kept across a restart"
        assert done["status"] == f"error:start('/bin/sh':{reason}"
        assert "s3cret-value" not in db.read_bytes().decode("latin-1")
