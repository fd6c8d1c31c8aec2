"""Starting a payload's process.

We start children with `os.posix_spawn` (glibc's vfork+exec) and reap them through a pidfd
watched by the event loop: measured here it is the fastest path Python has, with no thread
per child and no `fork()` of the server's whole address space. See `bench/throughput.py`.
Payloads that ask for a working directory or resource limits take `forkexec` instead.
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import os
import stat
from collections.abc import Mapping, Sequence

from pericles.process.child import Child, OutputSink
from pericles.process.forkexec import RESET_SIGNALS, fork_exec
from pericles.process.identity import RunAs
from pericles.process.stdin import StdinWriter

#: The PATH a payload gets when its environment does not set one.
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class SpawnFailed(Exception):
    """The process could not be started; `reason` is the OS's own text for why."""

    def __init__(self, err: int) -> None:
        self.errno = err
        self.reason = os.strerror(err)
        super().__init__(self.reason)


def exec_errno(path: str) -> int:
    """0 when `path` can be executed, else the errno exec would fail with."""
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        return exc.errno or errno.ENOENT
    if stat.S_ISDIR(mode) or not os.access(path, os.X_OK):
        return errno.EACCES
    return 0


def resolve_executable(cmd: str, path: str) -> str:
    """The file `cmd` runs: as given when it has a slash, else looked up on `path` like execvp.

    Raises `SpawnFailed` with the errno that exec would give: ENOENT when nothing is found,
    EACCES when only files that cannot be executed are.
    """
    if "/" in cmd:
        return cmd
    first_error = errno.ENOENT
    for directory in path.split(":"):
        candidate = os.path.join(directory or ".", cmd)
        err = exec_errno(candidate)
        if err == 0:
            return candidate
        if err == errno.EACCES:
            first_error = err
    raise SpawnFailed(first_error)


def check_cwd(cwd: str) -> str | None:
    """Why `cwd` cannot be a payload's working directory, or None when it can."""
    if not os.path.isdir(cwd):
        return f"{cwd!r} is not a directory"
    if not os.access(cwd, os.X_OK):
        return f"{cwd!r} cannot be entered"
    return None


@dataclasses.dataclass(frozen=True, slots=True)
class Stdio:
    """What a child's stdin is: /dev/null (the default), `data` fed then closed, or a pipe."""

    data: bytes | None = None
    pipe: bool = False
    #: Most bytes the server queues for the child's stdin at once.
    limit: int = 1024 * 1024


def _posix_spawn(executable: str, argv: list[str], env: Mapping[str, str], fds: list[int]) -> int:
    stdin_action = (
        (os.POSIX_SPAWN_DUP2, fds[0], 0)
        if fds[0] >= 0
        else (os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0)
    )
    return os.posix_spawn(
        executable,
        argv,
        env,
        file_actions=[
            stdin_action,
            (os.POSIX_SPAWN_DUP2, fds[1], 1),
            (os.POSIX_SPAWN_DUP2, fds[2], 2),
        ],
        setsid=True,
        setsigdef=RESET_SIGNALS,
        setsigmask=(),
    )


def spawn(
    cmd: str,
    params: Sequence[str],
    env: Mapping[str, str],
    sink: OutputSink,
    loop: asyncio.AbstractEventLoop,
    *,
    stdio: Stdio | None = None,
    cwd: str | None = None,
    limits: Mapping[str, int] | None = None,
    executable: str | None = None,
    run_as: RunAs | None = None,
) -> Child:
    """Start `cmd` with `params` in a new session, output to pipes.

    `executable` is the file to exec (see `exe.resolve`), else `cmd` looked up on env's PATH;
    argv[0] stays `cmd`. `run_as` drops to that user and group before exec.
    Raises `SpawnFailed` when exec fails (no such file, permission denied, bad format).
    """
    stdio = stdio or Stdio()
    if executable is None:
        executable = resolve_executable(cmd, env.get("PATH", DEFAULT_PATH))
    argv = [cmd, *params]
    # os.pipe() fds are close-on-exec; dup2 onto 0, 1 and 2 makes just the child's ends inherited.
    in_r, in_w = os.pipe() if stdio.pipe or stdio.data is not None else (-1, -1)
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    try:
        if cwd is None and not limits and run_as is None:
            pid = _posix_spawn(executable, argv, env, [in_r, out_w, err_w])
        else:
            if in_r < 0:
                in_r = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)
            fds = (in_r, out_w, err_w)
            pid = fork_exec(executable, argv, env, fds, cwd, limits or {}, run_as)
    except OSError as exc:
        for fd in (out_r, err_r, in_w):
            if fd >= 0:
                os.close(fd)
        raise SpawnFailed(exc.errno or errno.EIO) from exc
    finally:
        for fd in (in_r, out_w, err_w):
            if fd >= 0:
                os.close(fd)
    writer = StdinWriter(in_w, loop, stdio.limit) if in_w >= 0 else None
    if writer is not None and stdio.data is not None:
        writer.write(stdio.data)
        writer.close()
    return Child(pid, out_r, err_r, sink, loop, writer)
