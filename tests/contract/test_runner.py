"""The `Runner` interface, the same for every backend (`RUNNERS` in conftest).

Real children of this test process: a runner starts, reports, signals and stops them.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path
from typing import Any

import pytest

from pericles.model import STDIN_PIPE, PayloadSpec
from pericles.runner import Execution, Exited, Output, Runner, StartFailed

TRUE = os.path.realpath("/bin/true")


def make_spec(**fields: Any) -> PayloadSpec:
    return PayloadSpec.model_validate(fields)


async def outcome(execution: Execution) -> tuple[dict[str, bytes], Exited]:
    """Everything it wrote, by stream, and how it ended."""
    written = {"stdout": b"", "stderr": b""}
    async for event in execution.events():
        if isinstance(event, Output):
            written[event.stream] += event.data
        else:
            return written, event
    raise AssertionError("events() ended without Exited")


def test_identify_names_the_file_and_its_digest(runner: Runner) -> None:
    resolved = asyncio.run(runner.identify(make_spec(cmd="true")))
    assert resolved.exe == TRUE
    assert resolved.sha256 == hashlib.sha256(Path(TRUE).read_bytes()).hexdigest()
    with pytest.raises(StartFailed, match="No such file"):
        asyncio.run(runner.identify(make_spec(cmd="/no/such/command")))


def test_output_in_order_then_one_exit(runner: Runner) -> None:
    spec = make_spec(cmd="/bin/sh", params=["-c", "echo out; echo err >&2; exit 3"])

    async def run() -> tuple[dict[str, bytes], Exited]:
        return await outcome(await runner.start("p1", spec, await runner.identify(spec)))

    written, exited = asyncio.run(run())
    assert written == {"stdout": b"out\n", "stderr": b"err\n"}
    assert (exited.exit_code, exited.signal) == (3, None)


def test_stdin_pipe_signals_and_terminate(runner: Runner) -> None:
    cat = make_spec(cmd="/bin/cat", stdin=STDIN_PIPE)
    sleeper = make_spec(cmd="/bin/sleep", params=["30"])

    async def run() -> None:
        execution = await runner.start("p2", cat)
        execution.write_stdin(b"hello", close=True)
        written, exited = await outcome(execution)
        assert (written["stdout"], exited.exit_code) == (b"hello", 0)
        assert not execution.send_signal("SIGUSR1")  # it has ended

        execution = await runner.start("p3", sleeper)
        assert execution.pid is not None
        assert execution.send_signal("SIGCONT")
        await execution.terminate(grace=5)
        _, exited = await outcome(execution)
        assert (exited.exit_code, exited.signal) == (None, "SIGTERM")

    asyncio.run(run())


def test_what_it_cannot_run(runner: Runner, tmp_path: Path) -> None:
    missing = tmp_path / "gone"
    errors = runner.check(make_spec(cmd="/bin/true", cwd=str(missing)))
    assert [e.loc for e in errors] == ["cwd"]
    assert runner.check(make_spec(cmd="/bin/true", cwd=str(tmp_path))) == []

    async def start() -> None:
        await runner.start("p4", make_spec(cmd="/no/such/command"))

    with pytest.raises(StartFailed, match="No such file"):
        asyncio.run(start())
