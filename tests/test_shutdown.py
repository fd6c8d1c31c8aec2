"""Stopping the server stops every payload it started, grandchildren included."""

from __future__ import annotations

import os
import signal
from functools import partial
from pathlib import Path

import pytest

from tests.helpers import (
    group_members,
    processes,
    running_server,
    start_server,
    wait_for_status,
    wait_until,
)


def _has_members(pgrp: int, count: int) -> bool:
    return len(group_members(pgrp)) == count


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_no_process_outlives_the_server(sig: signal.Signals) -> None:
    server = start_server("--shutdown-grace", "1")
    try:
        with server.client() as client:
            groups = []
            for script in ("sleep 300 & sleep 300", "trap '' TERM; sleep 300 & sleep 300"):
                response = client.post(
                    "/payloads", json={"cmd": "/bin/sh", "params": ["-c", script]}
                )
                record = wait_for_status(client, response.json()["id"], "working")
                pgrp = int(record["pid"])
                # The shell, its background sleep and its foreground sleep.
                wait_until(partial(_has_members, pgrp, 3), 10, "the grandchildren")
                groups.append(pgrp)
    finally:
        code = server.stop(sig)
    assert code == 0, server.log()
    for pgrp in groups:
        assert group_members(pgrp) == []
    assert "stopping 2 running payload(s)" in server.log()


def test_settings_come_from_the_environment() -> None:
    with running_server(env={"PERICLES_PORT": "0", "PERICLES_HOST": "127.0.0.1"}) as server:
        assert "Uvicorn running on http://127.0.0.1:" in server.log()
        with server.client() as client:
            assert client.get("/healthz").json() == {"status": "ok"}


def test_a_bad_setting_is_refused_with_a_clear_message() -> None:
    import subprocess

    from tests.helpers import handler_serve

    done = subprocess.run(
        [handler_serve(), "--port", "not-a-port"], capture_output=True, text=True, timeout=30
    )
    assert done.returncode != 0
    assert "port" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_process_that_left_its_group_is_stopped_at_shutdown(tmp_path: Path) -> None:
    fifo = tmp_path / "ready"
    os.mkfifo(fifo)
    # Without cgroups (with them, the sleep dies with its payload: test_containment.py).
    server = start_server("--shutdown-grace", "1", "--containment", "session")
    try:
        with server.client() as client:
            # setsid puts the sleep in a session of its own, beyond its payload's group; the
            # payload exits once the sleep's session exists.
            script = 'setsid sh -c \'echo > "$0"; exec sleep 300\' "$0" & read x < "$0"'
            response = client.post(
                "/payloads", json={"cmd": "/bin/sh", "params": ["-c", script, str(fifo)]}
            )
            wait_for_status(client, response.json()["id"])

            def escaped() -> list[int]:
                return [
                    p.pid
                    for p in processes()
                    if p.ppid == server.pid and p.state != "Z" and p.pgrp == p.pid
                ]

            strays = wait_until(escaped, 10, "the escaped sleep to be adopted by the server")
    finally:
        code = server.stop()
    assert code == 0
    assert not [p for p in processes() if p.pid in strays and p.state != "Z"]
