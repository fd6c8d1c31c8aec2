"""The spec's optional fields: env, cwd, stdin, timeouts; validated, echoed, and obeyed."""

from __future__ import annotations

import time
from functools import partial
from pathlib import Path

import httpx
import pytest

from tests.helpers import post, wait_for_status, wait_until


def env_of(client: httpx.Client, tmp_path: Path, **fields: object) -> dict[str, str]:
    out = tmp_path / "env"
    record = post(client, "/bin/sh", "-c", 'env > "$0"', str(out), **fields)
    assert wait_for_status(client, record["id"])["exit_code"] == 0
    return dict(line.split("=", 1) for line in out.read_text().splitlines())


def test_env_is_laid_over_a_clean_environment(client: httpx.Client, tmp_path: Path) -> None:
    env = env_of(client, tmp_path, env={"GREETING": "hello world", "EMPTY": ""})
    assert env["GREETING"] == "hello world"
    assert env["EMPTY"] == ""
    assert env["PATH"].startswith("/usr/local/sbin")
    # Nothing of the server's own environment (the test runner's) leaks in.
    assert "VIRTUAL_ENV" not in env
    assert "PYTEST_CURRENT_TEST" not in env
    assert set(env) - {"GREETING", "EMPTY", "PATH", "PWD", "OLDPWD", "SHLVL", "_"} == set()


def test_env_may_set_the_path_used_to_find_the_command(
    client: httpx.Client, tmp_path: Path
) -> None:
    tool = tmp_path / "my-tool"
    tool.write_text('#!/bin/sh\necho ran > "$1"\n')
    tool.chmod(0o755)
    out = tmp_path / "out"
    record = post(client, "my-tool", str(out), env={"PATH": f"{tmp_path}:/bin"})
    assert wait_for_status(client, record["id"])["exit_code"] == 0
    assert out.read_text() == "ran\n"


def test_cwd(client: httpx.Client, tmp_path: Path) -> None:
    out = tmp_path / "pwd"
    record = post(client, "/bin/sh", "-c", 'pwd > "$0"', str(out), cwd=str(tmp_path))
    assert record["cwd"] == str(tmp_path)
    assert wait_for_status(client, record["id"])["exit_code"] == 0
    assert out.read_text().strip() == str(tmp_path)


def test_a_relative_command_runs_from_cwd(client: httpx.Client, tmp_path: Path) -> None:
    (tmp_path / "tool").write_text("#!/bin/sh\nexit 5\n")
    (tmp_path / "tool").chmod(0o755)
    record = post(client, "./tool", cwd=str(tmp_path))
    assert wait_for_status(client, record["id"])["exit_code"] == 5


def test_exec_errors_keep_the_seed_format_on_the_cwd_path(
    client: httpx.Client, tmp_path: Path
) -> None:
    bad = tmp_path / "bad"
    bad.write_text("\x7fELF garbage")
    bad.chmod(0o755)
    record = post(client, str(bad), cwd=str(tmp_path))
    assert (
        wait_for_status(client, record["id"])["status"] == f"error:start('{bad}':Exec format error"
    )
    missing = post(client, "/no/such/thing", cwd=str(tmp_path))
    done = wait_for_status(client, missing["id"])
    assert done["status"] == "error:start('/no/such/thing':No such file or directory"


def test_stdin_string_is_fed_then_closed(client: httpx.Client, tmp_path: Path) -> None:
    out = tmp_path / "out"
    record = post(client, "/bin/sh", "-c", 'cat > "$0"', str(out), stdin="line one\nline two\n")
    assert record["stdin"] == "line one\nline two\n"
    assert wait_for_status(client, record["id"])["exit_code"] == 0
    assert out.read_text() == "line one\nline two\n"


def test_without_stdin_the_process_reads_nothing(client: httpx.Client) -> None:
    record = post(client, "/bin/sh", "-c", "cat; exit 9")
    assert wait_for_status(client, record["id"])["exit_code"] == 9


def test_wall_timeout(client: httpx.Client) -> None:
    record = post(client, "/bin/sleep", "300", timeout=0.5)
    assert record["timeout"] == 0.5
    done = wait_for_status(client, record["id"])
    assert done["status"] == "timeout"
    assert done["timeout_reason"] == "wall"
    assert done["signal"] == "SIGTERM"
    assert 0.4 < done["duration_seconds"] < 5


def _output_is(client: httpx.Client, url: str, text: str) -> bool:
    return client.get(f"{url}/output").text == text


def test_idle_timeout(client: httpx.Client) -> None:
    # The payload echoes each line we send it: chatty for as long as we keep talking to it,
    # then silent, and killed about 0.5 s after its last line.
    record = post(
        client,
        "/bin/sh",
        "-c",
        'while read line; do echo "$line"; done',
        stdin="pipe",
        idle_timeout=0.5,
    )
    url = f"/payloads/{record['id']}"
    wait_for_status(client, record["id"], "working")
    talked_until = time.monotonic() + 1.5
    sent = ""
    while time.monotonic() < talked_until:
        line = f"{len(sent)}\n"
        client.post(f"{url}/stdin", json={"data": line}).raise_for_status()
        sent += line
        wait_until(partial(_output_is, client, url, sent), 5, f"the echo of {line!r}")
        assert client.get(url).json()["status"] == "working"
    done = wait_for_status(client, record["id"], timeout=10)
    assert done["status"] == "timeout"
    assert done["timeout_reason"] == "idle"
    # It outlived its idle timeout by far, because it kept writing.
    assert done["duration_seconds"] > 1.5


def test_a_payload_that_ends_in_time_is_finished(client: httpx.Client) -> None:
    done = wait_for_status(client, post(client, "/bin/true", timeout=30, idle_timeout=30)["id"])
    assert done["status"] == "finished"
    assert "timeout_reason" not in done


def test_every_field_is_echoed(client: httpx.Client, tmp_path: Path) -> None:
    fields = {
        "env": {"A": "1"},
        "cwd": str(tmp_path),
        "stdin": "x",
        "timeout": 30.0,
        "idle_timeout": 20.0,
        "kill_grace": 1.5,
        "limits": {"max_open_files": 64, "cpu_seconds": 10},
        "labels": {"team": "blue"},
        "priority": 3,
    }
    record = post(client, "/bin/true", **fields)
    assert list(record)[:4] == ["status", "cmd", "params", "id"]
    assert {k: record[k] for k in fields} == fields
    assert wait_for_status(client, record["id"])["status"] == "finished"


BAD: list[tuple[str, dict[str, object]]] = [
    ("env not a map", {"env": ["A=1"]}),
    ("env value a number", {"env": {"A": 1}}),
    ("env name with =", {"env": {"A=B": "1"}}),
    ("env empty name", {"env": {"": "1"}}),
    ("env NUL", {"env": {"A": "a\x00b"}}),
    ("cwd missing", {"cwd": "/no/such/dir"}),
    ("cwd a file", {"cwd": "/etc/passwd"}),
    ("cwd empty", {"cwd": ""}),
    ("stdin a number", {"stdin": 5}),
    ("timeout zero", {"timeout": 0}),
    ("timeout negative", {"timeout": -1}),
    ("timeout a string", {"timeout": "5"}),
    ("idle_timeout negative", {"idle_timeout": -0.5}),
    ("kill_grace negative", {"kill_grace": -1}),
    ("limits unknown", {"limits": {"gpus": 1}}),
    ("limits negative", {"limits": {"memory_bytes": -1}}),
    ("limits float", {"limits": {"cpu_seconds": 1.5}}),
    ("labels value a number", {"labels": {"a": 1}}),
    ("labels key with =", {"labels": {"a=b": "c"}}),
    ("priority a float", {"priority": 1.5}),
    ("priority huge", {"priority": 2**40}),
]


@pytest.mark.parametrize("fields", [f for _, f in BAD], ids=[name for name, _ in BAD])
def test_bad_fields_are_422_and_nothing_stored(
    client: httpx.Client, fields: dict[str, object]
) -> None:
    before = len(client.get("/payloads").json())
    response = client.post("/payloads", json={"cmd": "/bin/true", **fields})
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert len(client.get("/payloads").json()) == before
