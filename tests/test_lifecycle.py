"""Payloads move pending -> working -> finished, or fail to start, with real processes."""

from __future__ import annotations

import asyncio
import os
from datetime import datetime
from pathlib import Path

import httpx
import pytest

from tests.helpers import (
    Server,
    group_members,
    is_terminal,
    post,
    release,
    wait_for_status,
    wait_until,
    zombie_children,
)


def test_working_until_the_process_exits(client: httpx.Client, tmp_path: Path) -> None:
    fifo = tmp_path / "gate"
    os.mkfifo(fifo)
    record = post(client, "/bin/sh", "-c", 'read line < "$0"; exit 3', str(fifo))
    assert record["status"] == "pending"
    assert "started_at" not in record  # null fields are left out
    working = wait_for_status(client, str(record["id"]), "working")
    assert isinstance(working["pid"], int)
    assert working["exit_code"] is None
    assert "finished_at" not in working
    release(fifo)
    done = wait_for_status(client, str(record["id"]))
    assert done["status"] == "finished"
    assert done["exit_code"] == 3
    assert done["signal"] is None
    created = datetime.fromisoformat(str(done["created_at"]))
    started = datetime.fromisoformat(str(done["started_at"]))
    finished = datetime.fromisoformat(str(done["finished_at"]))
    assert created <= started <= finished
    assert str(done["finished_at"]).endswith("Z")


def test_signal_that_ended_the_process_is_recorded(client: httpx.Client) -> None:
    record = post(client, "/bin/sh", "-c", "kill -KILL $$")
    done = wait_for_status(client, str(record["id"]))
    assert done["status"] == "finished"
    assert done["exit_code"] is None
    assert done["signal"] == "SIGKILL"


def test_bare_name_is_found_on_the_default_path(client: httpx.Client) -> None:
    done = wait_for_status(client, str(post(client, "true")["id"]))
    assert done["status"] == "finished"
    assert done["exit_code"] == 0


def test_bare_name_not_on_path(client: httpx.Client) -> None:
    done = wait_for_status(client, str(post(client, "no-such-command-here")["id"]))
    assert done["status"] == "error:start('no-such-command-here':No such file or directory"
    assert "pid" not in done  # it never started
    assert done["finished_at"] is not None


def _file(path: Path, text: str, mode: int) -> str:
    path.write_text(text)
    path.chmod(mode)
    return str(path)


@pytest.mark.parametrize(
    ("name", "text", "mode", "reason"),
    [
        ("not-executable", "#!/bin/sh\necho hi\n", 0o644, "Permission denied"),
        ("no-interpreter-line", "\x7fELF garbage", 0o755, "Exec format error"),
        ("missing-interpreter", "#!/no/such/interpreter\n", 0o755, "No such file or directory"),
    ],
)
def test_exec_failures_keep_the_seed_format(
    client: httpx.Client, tmp_path: Path, name: str, text: str, mode: int, reason: str
) -> None:
    path = _file(tmp_path / name, text, mode)
    done = wait_for_status(client, str(post(client, path)["id"]))
    assert done["status"] == f"error:start('{path}':{reason}"


def test_directory_cannot_be_run(client: httpx.Client, tmp_path: Path) -> None:
    done = wait_for_status(client, str(post(client, str(tmp_path))["id"]))
    assert done["status"] == f"error:start('{tmp_path}':Permission denied"


def test_a_chatty_process_never_blocks_on_its_pipes(client: httpx.Client) -> None:
    # 40 MB to each stream, far more than any pipe holds: it ends only if we keep reading.
    script = "head -c 40000000 /dev/zero; head -c 40000000 /dev/zero >&2"
    done = wait_for_status(client, str(post(client, "/bin/sh", "-c", script)["id"]), timeout=60)
    assert done["status"] == "finished"
    assert done["exit_code"] == 0


def test_the_payload_environment_is_clean(client: httpx.Client, tmp_path: Path) -> None:
    out = tmp_path / "env"
    record = post(client, "/bin/sh", "-c", 'env > "$0"', str(out))
    wait_for_status(client, str(record["id"]))
    names = {line.split("=", 1)[0] for line in out.read_text().splitlines()}
    assert "PATH" in names
    assert not names & {"HOME", "VIRTUAL_ENV", "PYTEST_CURRENT_TEST"}


def test_stdin_is_empty(client: httpx.Client, tmp_path: Path) -> None:
    out = tmp_path / "stdin"
    record = post(client, "/bin/sh", "-c", 'cat > "$0"', str(out))
    done = wait_for_status(client, str(record["id"]))
    assert done["exit_code"] == 0
    assert out.read_bytes() == b""


@pytest.mark.slow
def test_500_concurrent_creates_none_lost(server: Server, client: httpx.Client) -> None:
    async def create_many() -> list[str]:
        limits = httpx.Limits(max_connections=50)
        async with httpx.AsyncClient(base_url=server.url, limits=limits, timeout=30) as ac:
            responses = await asyncio.gather(
                *(ac.post("/payloads", json={"cmd": "/bin/true"}) for _ in range(500))
            )
        assert all(r.status_code == 201 for r in responses)
        return [r.json()["id"] for r in responses]

    ids = asyncio.run(create_many())
    assert len(set(ids)) == 500

    def all_finished() -> bool:
        records = {r["id"]: r for r in client.get("/payloads").json()}
        return all(i in records and is_terminal(records[i]) for i in ids)

    wait_until(all_finished, 60, "500 payloads to finish")
    records = {r["id"]: r for r in client.get("/payloads").json()}
    assert all(records[i]["status"] == "finished" for i in ids)
    assert all(records[i]["exit_code"] == 0 for i in ids)
    assert zombie_children(server.pid) == []


def test_list_is_oldest_first(client: httpx.Client) -> None:
    ids = [post(client, "/bin/true")["id"] for _ in range(5)]
    listed = [r["id"] for r in client.get("/payloads").json()]
    assert [i for i in listed if i in ids] == ids
    stamps = [r["created_at"] for r in client.get("/payloads").json()]
    assert stamps == sorted(stamps)


def test_unknown_id_is_404(client: httpx.Client) -> None:
    response = client.get("/payloads/0d111286d6fb4f7ebd7464082bada101")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["status"] == 404


def test_grandchildren_do_not_outlive_the_payload(client: httpx.Client) -> None:
    # The payload exits at once and leaves a background sleep in its group: it goes too.
    record = post(client, "/bin/sh", "-c", "sleep 300 & echo started")
    done = wait_for_status(client, str(record["id"]))
    wait_until(lambda: not group_members(int(str(done["pid"]))), 10, "the group to be gone")


def test_records_leave_out_null_fields_but_keep_how_it_ended_once_started(
    client: httpx.Client, tmp_path: Path
) -> None:
    fifo = tmp_path / "gate"
    os.mkfifo(fifo)
    record = post(client, "/bin/sh", "-c", 'read line < "$0"', str(fifo))
    assert None not in record.values()
    assert not {"pid", "exit_code", "signal", "started_at", "env", "cwd"} & record.keys()
    working = wait_for_status(client, str(record["id"]), "working")
    # Started: exit_code and signal are there, null, as they stay for a signal's ending.
    assert (working["exit_code"], working["signal"]) == (None, None)
    assert isinstance(working["pid"], int)
    assert "finished_at" not in working
    release(fifo)
    done = wait_for_status(client, str(record["id"]))
    assert (done["exit_code"], done["signal"]) == (0, None)
    events = client.get(f"/payloads/{record['id']}/events").text
    assert '"exit_code":0,"signal":null' in events
    assert '"env":null' not in events
