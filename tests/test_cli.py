"""The real `pericles` command, run as a subprocess against a real server."""

from __future__ import annotations

import json
import operator
import os
import signal
import subprocess
import sys
import threading
import uuid
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import (
    PYTHON,
    Server,
    group_members,
    handler_serve,
    pericles_path,
    post,
    release,
    wait_for_status,
    wait_until,
)

SLOW_INTERLEAVE = """
import sys
from tests.cluster import WITH_CLUSTER

STORES = WITH_CLUSTER


def wait_for_gate():
    # An open can succeed on the writer of the previous release before it closes, and then
    # read only EOF: a gate has passed only once a line came through.
    while True:
        with open(sys.argv[1]) as gate:
            if gate.readline():
                return


for i in range(3):
    for name, stream in (("out", sys.stdout), ("err", sys.stderr)):
        stream.write(f"{name} {i}\\n")
        stream.flush()
        wait_for_gate()
"""


def cli_env(server: Server) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PERICLES_")}
    return {**env, "PERICLES_URL": server.url}


def pericles(
    server: Server, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [pericles_path(), *args],
        env=cli_env(server),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=30,
    )


def start(server: Server, *args: str, **popen: Any) -> subprocess.Popen[str]:
    return subprocess.Popen([pericles_path(), *args], env=cli_env(server), text=True, **popen)


def labelled(client: httpx.Client, tag: str) -> dict[str, Any] | None:
    records: list[dict[str, Any]] = client.get("/payloads", params={"label": f"t={tag}"}).json()
    return records[0] if records and records[0]["status"] == "working" else None


@pytest.mark.parametrize(
    ("argv", "code"),
    [
        (["/bin/sh", "-c", "exit 3"], 3),
        (["/bin/true"], 0),
        (["/bin/sh", "-c", "kill -TERM $$"], 128 + signal.SIGTERM),
        (["/bin/sh", "-c", "kill -KILL $$"], 128 + signal.SIGKILL),
        (["/no/such/command"], 127),
        (["--timeout", "0.2", "/bin/sleep", "30"], 124),
    ],
    ids=["exit-3", "exit-0", "sigterm", "sigkill", "error-start", "timeout"],
)
def test_run_wait_exits_as_the_payload_ended(server: Server, argv: list[str], code: int) -> None:
    assert pericles(server, "run", "--wait", *argv).returncode == code


def test_run_prints_the_id(server: Server, client: httpx.Client) -> None:
    done = pericles(server, "run", "--env", "X=1", "--", "/bin/sh", "-c", "echo $X")
    payload_id = done.stdout.strip()
    assert done.returncode == 0
    assert len(payload_id) == 32
    wait_for_status(client, payload_id)
    assert client.get(f"/payloads/{payload_id}/output").text == "1\n"


def test_run_wait_keeps_stdout_and_stderr_apart(server: Server) -> None:
    done = pericles(
        server,
        "run",
        "--wait",
        "--stdin",
        "-",
        "/bin/sh",
        "-c",
        "cat; echo e >&2; echo o",
        stdin="in\n",
    )
    assert (done.returncode, done.stdout, done.stderr) == (0, "in\no\n", "e\n")


def test_run_wait_streams_slow_interleaved_output_in_order(server: Server, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    os.mkfifo(gate)
    cli = start(
        server,
        "run",
        "--wait",
        PYTHON,
        "-c",
        SLOW_INTERLEAVE,
        str(gate),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    assert cli.stdout is not None
    pipe = cli.stdout
    seen: list[str] = []
    reader = threading.Thread(target=lambda: seen.extend(iter(pipe.readline, "")))
    reader.start()
    try:
        expected = [f"{name} {i}\n" for i in range(3) for name in ("out", "err")]
        for line in expected:
            # Each line must reach us while the payload is still blocked right after writing it.
            wait_until(partial(operator.contains, seen, line), 10, f"line {line!r}")
            release(gate)
        assert cli.wait(10) == 0
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.wait()
        reader.join(10)
        pipe.close()
    assert seen == expected


def test_cancel_from_elsewhere_ends_a_waiting_run_with_130(
    server: Server, client: httpx.Client
) -> None:
    tag = uuid.uuid4().hex
    cli = start(server, "run", "--wait", "--label", f"t={tag}", "/bin/sleep", "300")
    try:
        record = wait_until(lambda: labelled(client, tag), 10, "the payload to be working")
        cancelled = pericles(server, "cancel", record["id"][:12])
        assert cancelled.returncode == 0
        assert cancelled.stdout == f"{record['id']} cancelled\n"
        assert cli.wait(10) == 130
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.wait()


def test_ctrl_c_cancels_the_remote_payload(server: Server, client: httpx.Client) -> None:
    tag = uuid.uuid4().hex
    cli = start(server, "run", "--wait", "--label", f"t={tag}", "--", "/bin/sleep", "300")
    try:
        record = wait_until(lambda: labelled(client, tag), 10, "the payload to be working")
        cli.send_signal(signal.SIGINT)
        assert cli.wait(15) == 130
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.wait()
    assert wait_for_status(client, record["id"])["status"] == "cancelled"
    wait_until(lambda: not group_members(record["pid"]), 10, "the payload's processes to go")


def test_ids_resolve_from_unique_prefixes(server: Server, client: httpx.Client) -> None:
    ids = [post(client, "/bin/true")["id"] for _ in range(17)]
    everyone = [r["id"] for r in client.get("/payloads").json()]
    mine = ids[0]
    size = next(n for n in range(1, 33) if sum(x.startswith(mine[:n]) for x in everyone) == 1)
    shown = pericles(server, "show", "--json", mine[:size])
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["id"] == mine
    # 17 ids over 16 hex digits: at least two share their first digit.
    digit = next(d for d in "0123456789abcdef" if sum(x[0] == d for x in everyone) > 1)
    ambiguous = pericles(server, "show", digit)
    assert ambiguous.returncode == 1
    assert ambiguous.stderr.count("\n") == 1
    assert ambiguous.stderr.startswith(f"pericles: the id prefix {digit!r} matches")
    for candidate in (x for x in everyone if x[0] == digit):
        assert candidate in ambiguous.stderr
    unknown = pericles(server, "show", "zz")
    assert (unknown.returncode, unknown.stderr) == (
        1,
        "pericles: no payload has an id starting with 'zz'\n",
    )


def test_json_output_parses_back(server: Server, client: httpx.Client) -> None:
    payload_id = post(client, "/bin/sh", "-c", "echo hi; exit 5")["id"]
    waited = pericles(server, "wait", "--json", payload_id[:10])
    assert waited.returncode == 5
    record = json.loads(waited.stdout)
    assert (record["id"], record["status"], record["exit_code"]) == (payload_id, "finished", 5)
    listed = json.loads(pericles(server, "ls", "--all", "--json").stdout)
    assert payload_id in [r["id"] for r in listed]
    newest = json.loads(pericles(server, "ls", "--limit", "1", "--json").stdout)
    assert [r["id"] for r in newest] == [payload_id]
    logs = json.loads(pericles(server, "logs", "--json", payload_id).stdout)
    assert (logs["text"], logs["next_offset"]) == ("hi\n", 3)
    shown = json.loads(pericles(server, "show", "--json", payload_id).stdout)
    assert shown == record


def test_ls_is_a_plain_table_when_piped(server: Server, client: httpx.Client) -> None:
    payload_id = post(client, "/bin/echo", "two words")["id"]
    wait_for_status(client, payload_id)
    listed = pericles(server, "ls", "--status", "finished")
    assert listed.returncode == 0
    assert "\x1b[" not in listed.stdout
    header, *rows = listed.stdout.splitlines()
    assert header.split() == ["ID", "STATUS", "COMMAND", "AGE", "DURATION", "EXIT"]
    row = next(r for r in rows if r.startswith(payload_id[:8]))
    assert "finished" in row
    assert "/bin/echo 'two words'" in row


def test_logs_follows_until_the_end(server: Server, client: httpx.Client, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    os.mkfifo(gate)
    script = 'echo a; echo b >&2; read x < "$0"; echo c'
    payload_id = post(client, "/bin/sh", "-c", script, str(gate))["id"]
    follower = start(
        server, "logs", "-f", payload_id, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        assert follower.stdout is not None
        assert follower.stderr is not None
        # Both lines arrive while the payload still waits at its gate: followed, not replayed;
        # each on its own stream, as `run --wait` writes them.
        assert [follower.stdout.readline(), follower.stderr.readline()] == ["a\n", "b\n"]
        assert client.get(f"/payloads/{payload_id}").json()["status"] == "working"
        release(gate)
        rest, more_errors = follower.communicate(timeout=30)
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait()
    assert (follower.returncode, rest, more_errors) == (0, "c\n", "")
    errors = pericles(server, "logs", "--stderr", payload_id)
    assert errors.stdout == "b\n"


def test_rm_forgets_and_cancel_refuses_ended_ones(server: Server, client: httpx.Client) -> None:
    payload_id = post(client, "/bin/true")["id"]
    wait_for_status(client, payload_id)
    refused = pericles(server, "cancel", payload_id)
    assert refused.returncode == 1
    assert refused.stderr == (
        f"pericles: payload {payload_id} is 'finished' and cannot become 'cancelled'\n"
    )
    assert pericles(server, "rm", payload_id).stdout == f"{payload_id}\n"
    gone = pericles(server, "show", payload_id)
    assert (gone.returncode, gone.stderr) == (
        1,
        f"pericles: no payload has the id {payload_id!r}\n",
    )


def test_unreachable_server_is_one_line(server: Server) -> None:
    done = subprocess.run(
        [pericles_path(), "--server", "http://127.0.0.1:1", "ls"],
        env=cli_env(server),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 3
    assert done.stderr.startswith("pericles: cannot reach the server at http://127.0.0.1:1")
    assert done.stderr.count("\n") == 1


def test_usage_errors_exit_2(server: Server) -> None:
    assert pericles(server, "run").returncode == 2
    assert pericles(server, "run", "--env", "NOVALUE", "/bin/true").returncode == 2
    assert pericles(server, "frobnicate").returncode == 2


def test_what_the_model_refuses_is_one_line_before_sending(
    server: Server, client: httpx.Client
) -> None:
    before = client.get("/payloads").json()
    for bad in ("0", "-1", "nan"):
        done = pericles(server, "run", "--timeout", bad, "--", "/bin/true")
        assert (done.returncode, done.stdout) == (2, "")
        assert done.stderr.startswith("pericles: --timeout: "), done.stderr
        assert done.stderr.count("\n") == 1
    assert client.get("/payloads").json() == before


def test_serve_is_handler_serve() -> None:
    ours = subprocess.run(
        [pericles_path(), "serve", "--help"], capture_output=True, text=True, timeout=30
    )
    theirs = subprocess.run([handler_serve(), "--help"], capture_output=True, text=True, timeout=30)
    assert ours.returncode == theirs.returncode == 0
    assert ours.stdout == theirs.stdout


def test_help_imports_neither_httpx_nor_the_model_nor_rich() -> None:
    # `pericles --help` should start fast: the client (httpx), the payload model, rich and
    # the server's settings (pydantic-settings, for `worker`) are loaded by the commands
    # that use them.
    code = (
        "import sys\n"
        "from pericles.cli.main import main\n"
        "sys.argv = ['pericles', '--help']\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "heavy = ('httpx', 'pericles.model', 'rich.console', 'pericles.settings',"
        " 'pydantic_settings')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert "Usage" in done.stdout
    assert done.stdout.rstrip().endswith("[]"), done.stdout[-200:]


def test_ls_imports_only_what_it_uses(server: Server) -> None:
    # ls needs the client, the model and rich; not the server's settings, the streaming
    # of `run --wait`, pydantic (only --json uses it), or anything of the server side.
    code = (
        "import sys\n"
        "from pericles.cli.main import main\n"
        f"sys.argv = ['pericles', '--server', '{server.url}', 'ls']\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "unused = ('pericles.settings', 'pydantic_settings', 'pericles.cli.attach',"
        " 'fastapi', 'starlette', 'pericles.service', 'pydantic')\n"
        "print(sorted(m for m in unused if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.rstrip().endswith("[]"), done.stdout[-200:]


def test_run_wait_imports_no_pydantic(server: Server) -> None:
    # `run --wait` reads records and sends a plain spec: neither needs pydantic (~0.1 s to
    # import, with the payload model's schemas), nor do typer's options given as strings.
    # (rich is imported by httpx itself, for its own command line.)
    code = (
        "import sys\n"
        "from pericles.cli.main import main\n"
        f"sys.argv = ['pericles', '--server', '{server.url}', 'run', '--wait', '--',"
        " '/bin/echo', 'hi']\n"
        "try:\n    main()\nexcept SystemExit as exc:\n    code = exc.code\n"
        "unused = ('pydantic', 'pydantic_core', 'pericles.model.spec', 'pericles.cli.render',"
        " 'fastapi', 'pericles.settings')\n"
        "print(code, sorted(m for m in unused if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout == "hi\n0 []\n", done.stdout[-300:]
