"""The README's console examples, run against a real server: the docs cannot drift.

Every ```console block is a shell session: each `$ ` line is run (in one bash per block, so
variables carry from line to line) and what it prints must be what the README shows below
it, after the parts that change from run to run are made equal: ids, times, digests, pids,
durations and sizes, and runs of spaces. A line `...` in the README stands for any lines,
and `...` inside a line for any text. Blocks that need a setup the test does not make are
fenced as ```text instead.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import Server, start_server

STORES = ("memory",)

README = Path(__file__).resolve().parent.parent / "README.md"
_BLOCK = re.compile(r"^```console\n(.*?)^```", re.S | re.M)
_MARK = "@@pericles-readme-command@@"

# Most specific first: a digest would otherwise look like two ids.
_VARYING = [
    (re.compile(r"\b[0-9a-f]{64}\b"), "<SHA>"),
    (re.compile(r"\b[0-9a-f]{32}\b"), "<ID>"),
    (re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z"), "<TIME>"),
    (re.compile(r'("(pid|max_rss_bytes|cpu_\w+|duration_seconds)": )[0-9.e-]+'), r"\1<N>"),
    (re.compile(r"^[0-9a-f]{8}\b", re.M), "<SHORT>"),  # the ID column of `pericles ls`
    (re.compile(r"\b\d+(\.\d+)?s\b|\b\d+m\d\ds\b"), "<DUR>"),
    (re.compile(r"[ \t]+"), " "),
]


def _normal(text: str) -> str:
    for pattern, replacement in _VARYING:
        text = pattern.sub(replacement, text)
    return "\n".join(line.strip() for line in text.strip("\n").splitlines())


def _expected(lines: list[str]) -> re.Pattern[str]:
    parts = []
    for line in _normal("\n".join(lines)).splitlines() if lines else []:
        if line == "...":
            parts.append(r"(?:[^\n]*\n)*?")
        else:
            parts.append(re.escape(line).replace(re.escape("..."), "[^\n]*?") + "\n")
    return re.compile("".join(parts) + r"\Z")


def sessions() -> list[list[tuple[str, list[str]]]]:
    """Each console block as (command, the lines shown after it) pairs."""
    blocks = []
    for block in _BLOCK.findall(README.read_text()):
        steps: list[tuple[str, list[str]]] = []
        for line in block.splitlines():
            if line.startswith("$ "):
                steps.append((line[2:], []))
            else:
                assert steps, f"output before any command in the README: {line!r}"
                steps[-1][1].append(line)
        blocks.append(steps)
    return blocks


@pytest.fixture(scope="module")
def readme_server() -> Iterator[Server]:
    server = start_server()
    try:
        yield server
    finally:
        server.stop()


def _run(server: Server, commands: list[str], workdir: Path) -> list[str]:
    address = f"127.0.0.1:{server.port}"
    # The marker's printf would set $?: the status is kept around it, for `echo $?` lines.
    script = "".join(
        f"__status=$?; printf '%s\\n' {_MARK}; (exit $__status)\n"
        + command.replace("localhost:8000", address).replace("127.0.0.1:8000", address)
        + " 2>&1\n"
        for command in commands
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PERICLES_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PERICLES_URL"] = server.url
    # curl shows no progress meter on a terminal: nor here, where its stderr is captured.
    (workdir / ".curlrc").write_text("--silent\n--show-error\n")
    env["CURL_HOME"] = str(workdir)
    done = subprocess.run(
        ["bash", "--noprofile", "--norc", "-c", script],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    outputs = done.stdout.split(f"{_MARK}\n")[1:]
    assert len(outputs) == len(commands), done.stdout + done.stderr
    return outputs


SESSIONS = sessions()


def test_the_readme_has_console_examples() -> None:
    assert len(SESSIONS) >= 4
    assert sum(len(steps) for steps in SESSIONS) >= 15


@pytest.mark.parametrize("steps", SESSIONS, ids=[s[0][0][:40] for s in SESSIONS])
def test_readme_console_block(
    readme_server: Server, tmp_path: Path, steps: list[tuple[str, list[str]]]
) -> None:
    outputs = _run(readme_server, [command for command, _ in steps], tmp_path)
    for (command, shown), output in zip(steps, outputs, strict=True):
        actual = _normal(output)
        actual = actual + "\n" if actual else ""
        assert _expected(shown).match(actual), (
            f"$ {command}\n--- the README shows:\n"
            + "\n".join(shown)
            + f"\n--- it printed:\n{output}"
        )
