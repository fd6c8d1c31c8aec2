"""glibc's posix_spawn through ctypes: the GIL is free while a child execs, errors as OSError."""

from __future__ import annotations

import errno
import os
import threading
import time
from pathlib import Path

import pytest

from pericles.process import cspawn


def test_the_gil_is_released_while_the_child_is_being_started(tmp_path: Path) -> None:
    # The child opens a FIFO with no writer before it execs: posix_spawn (vfork semantics)
    # blocks until we open the other end. Python on this thread must run meanwhile.
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    result: list[tuple[int, int]] = []

    def spawn() -> None:
        pid = cspawn.spawn("/bin/true", ["true"], {}, [("open", 0, str(fifo), os.O_RDONLY, 0)], ())
        result.append(os.waitpid(pid, 0))

    thread = threading.Thread(target=spawn, daemon=True)
    thread.start()
    ran = 0
    deadline = time.monotonic() + 0.3
    while time.monotonic() < deadline:
        ran += 1
    assert not result, "the child started before its stdin's FIFO had a writer"
    assert ran > 1000
    os.close(os.open(fifo, os.O_WRONLY))
    thread.join(timeout=10)
    assert result
    assert os.waitstatus_to_exitcode(result[0][1]) == 0


def test_failures_are_oserrors_with_the_c_librarys_errno() -> None:
    with pytest.raises(OSError, match="No such file") as caught:
        cspawn.spawn("/nonexistent/cmd", ["cmd"], {}, [], ())
    assert caught.value.errno == errno.ENOENT


@pytest.mark.parametrize("env", [{"A=B": "x"}, {"": "x"}, {"A": "x\0y"}])
def test_an_environment_the_os_cannot_take_is_refused(env: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="environment"):
        cspawn.spawn("/bin/true", ["true"], env, [], ())


def test_argv_env_and_dup2_reach_the_child(tmp_path: Path) -> None:
    read, write = os.pipe()
    try:
        pid = cspawn.spawn(
            "/bin/sh",
            ["sh", "-c", 'printf "%s %s" "$0" "$X"', "zero"],
            {"X": "ex"},
            [("dup2", write, 1)],
            (),
        )
        os.close(write)
        write = -1
        assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
        assert os.read(read, 100) == b"zero ex"
    finally:
        os.close(read)
        if write >= 0:
            os.close(write)
