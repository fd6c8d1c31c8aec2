"""The `pericles` command as a newcomer meets it: never a traceback, one line per problem.

Every subcommand is run with bad values; whatever the value, the answer is a `pericles: ...`
line on stderr and an exit code, and no output anywhere holds a traceback.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.helpers import Server, pericles_path, post, running_server, start_server, wait_for_status
from tests.test_cli import pericles

STORES = ("memory",)

ID = "0" * 32

#: (argv, exit code): each a mistake a user makes; 2 for what is refused before sending.
BAD = [
    (["run", "--timeout", "0", "--", "/bin/true"], 2),
    (["run", "--timeout", "-1", "/bin/true"], 2),
    (["run", "--timeout", "soon", "/bin/true"], 2),
    (["run", "--", ""], 2),
    (["run", "--cwd", "", "/bin/true"], 2),
    (["run", "--env", "NOVALUE", "/bin/true"], 2),
    (["run", "--env", "=x", "/bin/true"], 2),
    (["run", "--label", "k=" + "v" * 2000, "/bin/true"], 2),
    (["run", "--stdin", "/nonexistent/file", "/bin/true"], 1),
    (["run", "--", "/bin/echo", "a\x01b\udcff"], 2),
    (["run"], 2),
    (["ls", "--limit", "0"], 2),
    (["ls", "--limit", "many"], 2),
    (["ls", "--status", "nope"], 1),
    (["show"], 2),
    (["show", "nope"], 1),
    (["show", ""], 1),
    (["logs", "--stdout", "--stderr", ID], 2),
    (["logs", ID], 1),
    (["wait", ID], 1),
    (["cancel", ID, "also-not"], 1),
    (["rm", ID], 1),
    (["rm"], 2),
    (["frobnicate"], 2),
    (["--server", "not a url", "ls"], 3),
    (["ls", "--server", "http://127.0.0.1:1"], 3),
    (["serve", "--port", "99999"], 2),
]


@pytest.mark.parametrize(("argv", "code"), BAD, ids=[" ".join(a)[:40] for a, _ in BAD])
def test_every_bad_value_is_one_line_never_a_traceback(
    server: Server, argv: list[str], code: int
) -> None:
    done = pericles(server, *argv)
    assert "Traceback" not in done.stdout + done.stderr
    assert done.returncode == code, done.stderr
    lines = done.stderr.splitlines()
    assert lines, "a failure says what went wrong"
    assert all(line.startswith(("pericles: ", "handler-serve: ")) for line in lines), lines
    assert len(lines) <= 2, lines  # one per problem: `cancel` of two bad ids says two


def test_client_side_errors_name_the_option(server: Server) -> None:
    done = pericles(server, "run", "--timeout", "0", "--", "/bin/true")
    assert done.stderr == "pericles: --timeout: must be greater than 0\n"
    empty = pericles(server, "run", "--", "")
    assert empty.stderr == "pericles: CMD: must not be empty\n"


@pytest.mark.parametrize(
    ("argv", "code", "line"),
    [
        (
            ["/nonexistent/x"],
            127,
            "pericles: /nonexistent/x could not start: No such file or directory",
        ),
        (
            ["--timeout", "0.3", "/bin/sleep", "30"],
            124,
            "pericles: /bin/sleep timed out after 0.3s",
        ),
        (["/bin/sh", "-c", "kill -KILL $$"], 137, "pericles: /bin/sh was killed by SIGKILL"),
        (["/bin/sh", "-c", "echo out; exit 3"], 3, None),
    ],
    ids=["error-start", "timeout", "signal", "exit-3"],
)
def test_run_wait_says_how_it_ended_on_stderr_only(
    server: Server, argv: list[str], code: int, line: str | None
) -> None:
    done = pericles(server, "run", "--wait", *argv)
    assert done.returncode == code
    assert done.stderr == (f"{line}\n" if line else "")
    assert done.stdout == ("out\n" if code == 3 else "")


def test_rm_of_an_active_payload_names_the_flag(server: Server, client: httpx.Client) -> None:
    payload_id = post(client, "/bin/sleep", "30")["id"]
    refused = pericles(server, "rm", payload_id)
    assert refused.returncode == 1
    assert "rm -f/--force" in refused.stderr
    assert "force=true" not in refused.stderr
    assert pericles(server, "rm", "--force", payload_id).stdout == f"{payload_id}\n"


def test_logs_writes_stderr_to_stderr(server: Server, client: httpx.Client) -> None:
    payload_id = post(client, "/bin/sh", "-c", "echo out; echo err >&2")["id"]
    wait_for_status(client, payload_id)
    both = pericles(server, "logs", payload_id)
    assert (both.stdout, both.stderr) == ("out\n", "err\n")
    assert pericles(server, "logs", "--stderr", payload_id).stdout == "err\n"


def test_show_ls_and_json_read_cleanly(server: Server, client: httpx.Client) -> None:
    failed = post(client, "/no/such/thing")["id"]
    wait_for_status(client, failed)
    shown = pericles(server, "show", failed).stdout
    assert shown.splitlines()[0].split() == ["id", failed]
    assert all(line == line.rstrip() for line in shown.splitlines()), "no trailing spaces"
    as_json = pericles(server, "show", "--json", failed).stdout
    assert as_json.startswith('{\n    "status": ')  # indented by four, as the server does
    assert json.loads(as_json) == client.get(f"/payloads/{failed}").json()
    listed = pericles(server, "ls", "--limit", "1").stdout.splitlines()
    assert listed[1].split()[1] == "error:start"  # the reason is for `show`
    assert len(listed[0]) < 80


def test_usage_lines_read_as_help_names_them(server: Server) -> None:
    for command in ("run", "ls", "show", "logs", "wait", "cancel", "rm"):
        usage = pericles(server, command, "--help").stdout
        for junk in ("{", "<", "list[str]"):
            assert junk not in usage, (command, junk)
    assert "Usage: pericles rm [OPTIONS] ID..." in pericles(server, "rm", "--help").stdout


def test_server_and_token_work_after_the_command(tmp_path: Path) -> None:
    token = "after-the-command-0123456789"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PERICLES_")}
    with running_server("--token", token) as guarded:
        for argv in (
            ["ls", "--server", guarded.url, "--token", token],
            ["--server", guarded.url, "ls", "--token", token],
            ["--token", token, "ls", "-s", guarded.url],
        ):
            done = subprocess.run(
                [pericles_path(), *argv], env=env, capture_output=True, text=True, timeout=30
            )
            assert (done.returncode, done.stderr) == (0, ""), argv


def test_version(server: Server) -> None:
    assert pericles(server, "--version").stdout == "pericles 0.1.0\n"


def test_wait_on_a_lost_payload_is_one_line(tmp_path: Path) -> None:
    store = ("--store", f"sqlite:///{tmp_path / 'records.db'}")
    first = start_server(*store)
    try:
        with first.client() as client:
            payload_id = post(client, "/bin/sleep", "300")["id"]
            wait_for_status(client, payload_id, "working")
        first.stop(signal.SIGKILL)
    finally:
        first.stop()
    with running_server(*store) as again, again.client() as client:
        wait_for_status(client, payload_id, "lost")
        done = pericles(again, "wait", payload_id)
    assert "Traceback" not in done.stderr
    assert done.stderr == "pericles: /bin/sleep was lost: its server stopped while it ran\n"
    assert done.returncode == 125
