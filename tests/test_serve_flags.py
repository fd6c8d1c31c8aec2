"""handler-serve's first seconds: one line per bad flag, clean help, clear refusals."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from pericles.settings import Settings
from tests.helpers import handler_serve, run_serve, start_server

STORES = ("memory",)  # the sqlite cases name their own files


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["--port", "99999"], "handler-serve: --port: must be at most 65535, got 99999"),
        (["--max-running", "-1"], "handler-serve: --max-running: must be at least 0, got -1"),
        (["--keep-for", "soon"], "handler-serve: --keep-for: must be a number, got soon"),
        (["--log-level", "loud"], "handler-serve: --log-level: must be one of"),
        (["--store", "postgres://x"], "handler-serve: --store: expected memory://"),
        (["--no-such-flag"], "handler-serve: unrecognized arguments: --no-such-flag"),
        (["--port"], "handler-serve: argument --port: expected one argument"),
        (["--tls-cert", "/x.pem"], "handler-serve: --tls-cert and --tls-key go together"),
    ],
)
def test_a_bad_flag_is_one_line_naming_it(args: list[str], line: str) -> None:
    result = run_serve(*args)
    assert result.returncode == 2
    assert result.stderr.startswith(line), result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_each_bad_flag_gets_its_own_line() -> None:
    result = run_serve("--port", "70000", "--max-pending", "-5")
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "handler-serve: --port: must be at most 65535, got 70000",
        "handler-serve: --max-pending: must be at least 0, got -5",
    ]


def test_a_bad_variable_is_named_as_set() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PERICLES_")}
    result = subprocess.run(
        [handler_serve()],
        env={**env, "PERICLES_MAX_BODY": "lots"},
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr == "handler-serve: PERICLES_MAX_BODY: must be a whole number, got lots\n"


def test_help_shows_every_setting_cleanly() -> None:
    result = run_serve("--help")
    assert result.returncode == 0
    text = result.stdout
    for name in Settings.model_fields:  # flags added by any issue show up by themselves
        assert f"--{name.replace('_', '-')}" in text
    # No pydantic internals: types, null, default factories, doubled defaults.
    for junk in ("null", "factory", "SecretStr", "float,", "int,", "list[", "(default: ever) ["):
        assert junk not in text, junk
    assert re.search(r"--max-output BYTES\s+.*\[default: 1 MiB\]", text.replace("\n", " "))
    assert "--shutdown-grace SECONDS" in text
    assert "Exit status:" in text


def test_version() -> None:
    result = run_serve("--version")
    assert (result.returncode, result.stdout) == (0, "handler-serve 0.1.0\n")


def test_a_port_in_use_is_one_line_and_exit_3() -> None:
    first = start_server()
    try:
        result = run_serve("--port", str(first.port))
    finally:
        first.stop()
    assert result.returncode == 3
    assert result.stderr == (
        f"handler-serve: port {first.port} is in use (another handler-serve? try --port 0 "
        "for any free port, or make serve PORT=...)\n"
    )


def test_three_slashes_explain_the_four_slash_form(tmp_path: Path) -> None:
    # tmp_path is absolute: three slashes make it relative to the current directory.
    relative = str(tmp_path / "x.db").lstrip("/")
    result = run_serve("--store", f"sqlite:///{relative}")
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1
    assert f"write four slashes: sqlite:////{relative}" in result.stderr


def test_a_second_server_on_the_same_file_is_told_so(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'records.db'}"
    first = start_server("--store", store)
    try:
        result = run_serve("--store", store)
    finally:
        first.stop()
    assert result.returncode == 1
    assert f"another server is using {tmp_path / 'records.db'}" in result.stderr
    assert result.stderr.count("\n") == 1
