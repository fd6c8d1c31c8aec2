"""Starting a payload's process.

We start children with `os.posix_spawn` (glibc's vfork+exec) and reap them through a pidfd
watched by the event loop: measured here it is the fastest path Python has, with no thread
per child and no `fork()` of the server's whole address space. See `bench/throughput.py`.
"""

from __future__ import annotations

import asyncio
import errno
import os
import signal
import stat
from collections.abc import Mapping, Sequence

from pericles.process.child import Child, OutputSink

#: The PATH a payload gets when its environment does not set one.
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# Python ignores SIGPIPE and SIGXFSZ for itself; an ignored signal stays ignored across exec,
# so a child would never die of a broken pipe the way it does from a shell.
_RESET_SIGNALS = (signal.SIGPIPE, signal.SIGXFSZ)


class SpawnFailed(Exception):
    """The process could not be started; `reason` is the OS's own text for why."""

    def __init__(self, err: int) -> None:
        self.errno = err
        self.reason = os.strerror(err)
        super().__init__(self.reason)


def _executable(path: str) -> int:
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
        err = _executable(candidate)
        if err == 0:
            return candidate
        if err == errno.EACCES:
            first_error = err
    raise SpawnFailed(first_error)


def spawn(
    cmd: str,
    params: Sequence[str],
    env: Mapping[str, str],
    sink: OutputSink,
    loop: asyncio.AbstractEventLoop,
) -> Child:
    """Start `cmd` with `params` in a new session, stdin from /dev/null, output to pipes.

    Raises `SpawnFailed` when exec fails (no such file, permission denied, bad format).
    """
    executable = resolve_executable(cmd, env.get("PATH", DEFAULT_PATH))
    # os.pipe() fds are close-on-exec; dup2 onto 1 and 2 makes just the write ends inherited.
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    try:
        pid = os.posix_spawn(
            executable,
            [cmd, *params],
            env,
            file_actions=[
                (os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0),
                (os.POSIX_SPAWN_DUP2, out_w, 1),
                (os.POSIX_SPAWN_DUP2, err_w, 2),
            ],
            setsid=True,
            setsigdef=_RESET_SIGNALS,
            setsigmask=(),
        )
    except OSError as exc:
        for fd in (out_r, err_r):
            os.close(fd)
        raise SpawnFailed(exc.errno or errno.EIO) from exc
    finally:
        os.close(out_w)
        os.close(err_w)
    return Child(pid, out_r, err_r, sink, loop)
