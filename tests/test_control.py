"""Cancel, delete, signals and a stdin pipe, on real process groups."""

from __future__ import annotations

import os
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import httpx
import pytest

from tests.cluster import WITH_CLUSTER
from tests.helpers import (
    Server,
    group_members,
    post,
    processes,
    release,
    start_server,
    wait_for_status,
    wait_until,
)

STORES = WITH_CLUSTER


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    srv = start_server("--kill-grace", "5")
    try:
        yield srv
    finally:
        srv.stop()


def assert_gone(pgrp: int) -> None:
    """Every process of the group ends (zombies are reaped within moments)."""
    wait_until(lambda: not group_members(pgrp), 10, f"group {pgrp} to be gone")


def _has_members(pgrp: int, count: int) -> bool:
    return len(group_members(pgrp)) == count


def running_group(client: httpx.Client, script: str, members: int, **fields: object) -> str:
    record = post(client, "/bin/sh", "-c", script, **fields)
    working = wait_for_status(client, record["id"], "working")
    wait_until(partial(_has_members, working["pid"], members), 10, "the group's processes")
    return str(record["id"])


def test_cancel_kills_the_whole_group(client: httpx.Client) -> None:
    payload_id = running_group(client, "sleep 300 & sleep 300", 3)
    pgrp = client.get(f"/payloads/{payload_id}").json()["pid"]
    response = client.post(f"/payloads/{payload_id}/cancel")
    assert response.status_code == 200
    record = response.json()
    assert record["status"] == "cancelled"
    assert record["signal"] == "SIGTERM"
    assert record["finished_at"] is not None
    assert_gone(pgrp)


def test_cancel_kills_after_the_grace_a_group_that_ignores_term(client: httpx.Client) -> None:
    payload_id = running_group(client, "trap '' TERM; sleep 300 & sleep 300", 3, kill_grace=0.5)
    pgrp = client.get(f"/payloads/{payload_id}").json()["pid"]
    record = client.post(f"/payloads/{payload_id}/cancel").json()
    assert record["status"] == "cancelled"
    assert record["signal"] == "SIGKILL"
    assert record["kill_grace"] == 0.5
    assert_gone(pgrp)


def test_cancelling_an_ended_payload_is_409(client: httpx.Client) -> None:
    done = wait_for_status(client, post(client, "/bin/true")["id"])
    response = client.post(f"/payloads/{done['id']}/cancel")
    assert response.status_code == 409
    assert response.headers["content-type"] == "application/problem+json"
    assert client.get(f"/payloads/{done['id']}").json()["status"] == "finished"


def test_cancel_unknown_is_404(client: httpx.Client) -> None:
    assert client.post("/payloads/" + "0" * 32 + "/cancel").status_code == 404


def test_delete_forgets_an_ended_payload(client: httpx.Client) -> None:
    done = wait_for_status(client, post(client, "/bin/echo", "hi")["id"])
    assert client.delete(f"/payloads/{done['id']}").status_code == 204
    assert client.get(f"/payloads/{done['id']}").status_code == 404
    assert done["id"] not in [r["id"] for r in client.get("/payloads").json()]
    assert client.delete(f"/payloads/{done['id']}").status_code == 404


def test_delete_an_active_payload_needs_force(client: httpx.Client) -> None:
    payload_id = running_group(client, "exec sleep 300", 1)
    pgrp = client.get(f"/payloads/{payload_id}").json()["pid"]
    response = client.delete(f"/payloads/{payload_id}")
    assert response.status_code == 409
    assert client.get(f"/payloads/{payload_id}").json()["status"] == "working"
    assert client.delete(f"/payloads/{payload_id}", params={"force": "true"}).status_code == 204
    assert client.get(f"/payloads/{payload_id}").status_code == 404
    assert_gone(pgrp)


def _state(pid: int) -> str | None:
    return next((p.state for p in processes() if p.pid == pid), None)


def test_stop_pauses_and_cont_resumes(client: httpx.Client, tmp_path: Path) -> None:
    fifo = tmp_path / "gate"
    os.mkfifo(fifo)
    record = post(client, "/bin/sh", "-c", 'read x < "$0"; exit 7', str(fifo))
    pid = wait_for_status(client, record["id"], "working")["pid"]
    paused = client.post(f"/payloads/{record['id']}/signal", json={"signal": "SIGSTOP"})
    assert paused.status_code == 200
    assert paused.json()["status"] == "paused"
    wait_until(lambda: _state(pid) == "T", 10, "the process to be stopped")
    resumed = client.post(f"/payloads/{record['id']}/signal", json={"signal": "CONT"}).json()
    assert resumed["status"] == "working"
    wait_until(lambda: _state(pid) == "S", 10, "the process to run again")
    release(fifo)
    assert wait_for_status(client, record["id"])["exit_code"] == 7


def test_cancel_a_paused_payload(client: httpx.Client) -> None:
    payload_id = running_group(client, "exec sleep 300", 1)
    client.post(f"/payloads/{payload_id}/signal", json={"signal": "STOP"})
    assert client.post(f"/payloads/{payload_id}/cancel").json()["status"] == "cancelled"


def test_a_signal_reaches_the_group(client: httpx.Client) -> None:
    # `wait` returns as soon as a trapped signal arrives; the sleep in the group dies of it.
    script = "trap 'exit 42' USR1; echo ready; sleep 300 & wait"
    record = post(client, "/bin/sh", "-c", script)
    # Signalled before its trap is set, the shell would die of USR1 instead.
    output = f"/payloads/{record['id']}/output"
    wait_until(lambda: client.get(output).text == "ready\n", 10, "the trap to be set")
    response = client.post(f"/payloads/{record['id']}/signal", json={"signal": "SIGUSR1"})
    assert response.status_code == 200
    assert wait_for_status(client, record["id"])["exit_code"] == 42


@pytest.mark.parametrize("name", ["SIGSEGV", "9", "", "SIGFOO"])
def test_signals_off_the_allow_list_are_422(client: httpx.Client, name: str) -> None:
    payload_id = running_group(client, "exec sleep 300", 1)
    response = client.post(f"/payloads/{payload_id}/signal", json={"signal": name})
    assert response.status_code == 422
    assert client.get(f"/payloads/{payload_id}").json()["status"] == "working"
    client.post(f"/payloads/{payload_id}/cancel")


def test_signal_to_an_ended_payload_is_409(client: httpx.Client) -> None:
    done = wait_for_status(client, post(client, "/bin/true")["id"])
    response = client.post(f"/payloads/{done['id']}/signal", json={"signal": "SIGTERM"})
    assert response.status_code == 409


def test_stdin_pipe_round_trip(client: httpx.Client, tmp_path: Path) -> None:
    out = tmp_path / "out"
    record = post(client, "/bin/sh", "-c", 'cat > "$0"', str(out), stdin="pipe")
    assert record["stdin"] == "pipe"
    wait_for_status(client, record["id"], "working")
    url = f"/payloads/{record['id']}/stdin"
    assert client.post(url, json={"data": "hello "}).json() == {"written": 6, "closed": False}
    assert client.post(url, json={"data_base64": "d29ybGQK"}).status_code == 200
    assert client.post(url, json={"close": True}).json()["closed"] is True
    done = wait_for_status(client, record["id"])
    assert done["exit_code"] == 0
    assert out.read_text() == "hello world\n"
    assert client.post(url, json={"data": "late"}).status_code == 409


def test_stdin_needs_a_pipe(client: httpx.Client) -> None:
    payload_id = running_group(client, "exec sleep 300", 1)
    response = client.post(f"/payloads/{payload_id}/stdin", json={"data": "x"})
    assert response.status_code == 409
    assert response.json()["type"] == "/problems/stdin-unavailable"
    client.post(f"/payloads/{payload_id}/cancel")


def test_a_big_stdin_write_does_not_block_the_server(client: httpx.Client, tmp_path: Path) -> None:
    # 512 KiB into a reader that has not started reading: far more than a pipe holds.
    fifo = tmp_path / "gate"
    os.mkfifo(fifo)
    out = tmp_path / "out"
    script = 'read x < "$0"; cat > "$1"'
    record = post(client, "/bin/sh", "-c", script, str(fifo), str(out), stdin="pipe")
    wait_for_status(client, record["id"], "working")
    url = f"/payloads/{record['id']}/stdin"
    assert client.post(url, json={"data": "x" * 512 * 1024, "close": True}).status_code == 200
    assert client.get("/healthz").status_code == 200
    release(fifo)
    assert wait_for_status(client, record["id"])["exit_code"] == 0
    assert out.stat().st_size == 512 * 1024
