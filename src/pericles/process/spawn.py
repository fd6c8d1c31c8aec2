"""Starting a payload's process.

We start children with `os.posix_spawn` (glibc's vfork+exec) and reap them through a pidfd
watched by the event loop: measured here it is the fastest path Python has, with no thread
per child and no `fork()` of the server's whole address space. See `bench/throughput.py`.
Payloads that ask for a working directory or resource limits take `forkexec` instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import os
import signal
import stat
import uuid
from collections.abc import Mapping, Sequence

from pericles.process.cgroup import PayloadCgroup
from pericles.process.child import Child, OutputSink
from pericles.process.contain import Containment
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


def _posix_spawn(
    executable: str | int, argv: list[str], env: Mapping[str, str], fds: list[int]
) -> int:
    stdin_action = (
        (os.POSIX_SPAWN_DUP2, fds[0], 0)
        if fds[0] >= 0
        else (os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0)
    )
    actions: list[tuple[object, ...]] = [
        stdin_action,
        (os.POSIX_SPAWN_DUP2, fds[1], 1),
        (os.POSIX_SPAWN_DUP2, fds[2], 2),
    ]
    if isinstance(executable, int):
        # The open file itself. dup2 onto itself clears close-on-exec in the child only: a
        # `#!` script's interpreter is handed /proc/self/fd/N and must still find it open.
        actions.append((os.POSIX_SPAWN_DUP2, executable, executable))
        executable = f"/proc/self/fd/{executable}"
    return os.posix_spawn(
        executable,
        argv,
        env,
        file_actions=actions,
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
    executable: str | int | None = None,
    run_as: RunAs | None = None,
    containment: Containment | None = None,
    payload_id: str | None = None,
    keep_descendants: bool = False,
    argv0: str | None = None,
    cwd_fd: int | None = None,
) -> Child:
    """Start `cmd` with `params` in a new session, output to pipes.

    `executable` is the file to exec: a path (see `exe.open_target`) or an open file's
    descriptor, executed as is; else `cmd` looked up on env's PATH. argv[0] is `argv0`, else
    `cmd`. `cwd_fd`, an open directory, is where the child starts (`fchdir`), else `cwd`.
    `run_as` drops to that user and group before exec. With `containment` using cgroups,
    the process runs in a new cgroup named `payload_id`.
    Raises `SpawnFailed` when anything fails before the child is watched (no such file,
    permission denied, too many open files...): then nothing of it is left, no process,
    descriptor or cgroup.
    """
    stdio = stdio or Stdio()
    if executable is None:
        executable = resolve_executable(cmd, env.get("PATH", DEFAULT_PATH))
    argv = [argv0 or cmd, *params]
    directory: str | int | None = cwd_fd if cwd_fd is not None else cwd
    containment = containment or _SESSION_ONLY
    ours: list[int] = []  # descriptors to close if the start fails
    theirs: list[int] = []  # the child's ends: closed once it has them
    cgroup: PayloadCgroup | None = None
    pid = 0
    try:
        cgroup = containment.new_cgroup(payload_id or uuid.uuid4().hex)
        in_r, in_w, out_r, out_w, err_r, err_w = _pipes(stdio, ours, theirs)
        if directory is None and not limits and run_as is None:
            pid = _posix_spawn(executable, argv, env, [in_r, out_w, err_w])
            if cgroup is not None:
                cgroup.join(pid)
        else:
            if in_r < 0:
                in_r = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)
                theirs.append(in_r)
            fds = (in_r, out_w, err_w)
            join = cgroup.procs_fd if cgroup is not None else -1
            pid = fork_exec(executable, argv, env, fds, directory, limits or {}, run_as, join)
        _close(theirs)
        theirs = []
        # Without the pidfd we could not watch the child: it must not run unwatched.
        pidfd = os.pidfd_open(pid)
    except OSError as exc:
        _close(theirs + ours)
        if pid:
            _abort(pid, cgroup)
        if cgroup is not None:
            with contextlib.suppress(OSError):
                cgroup.remove()
        raise SpawnFailed(exc.errno or errno.EIO) from exc
    if cgroup is not None:
        cgroup.close_fd()
    members = containment.members(pid, cgroup)
    writer = StdinWriter(in_w, loop, stdio.limit) if in_w >= 0 else None
    if writer is not None and stdio.data is not None:
        writer.write(stdio.data)
        writer.close()
    return Child(pid, pidfd, members, out_r, err_r, sink, loop, writer, keep_descendants)


_SESSION_ONLY = Containment(None, "not asked for")


def _pipes(stdio: Stdio, ours: list[int], theirs: list[int]) -> tuple[int, ...]:
    """The child's stdin (-1, -1 for /dev/null), stdout and stderr pipes, as (read, write)
    pairs; each end is noted in `ours` or `theirs` as soon as it exists."""
    # os.pipe() fds are close-on-exec; dup2 onto 0, 1 and 2 makes just the child's ends
    # inherited.
    in_r, in_w = -1, -1
    if stdio.pipe or stdio.data is not None:
        in_r, in_w = os.pipe()
        theirs.append(in_r)
        ours.append(in_w)
    out_r, out_w = os.pipe()
    ours.append(out_r)
    theirs.append(out_w)
    err_r, err_w = os.pipe()
    ours.append(err_r)
    theirs.append(err_w)
    return in_r, in_w, out_r, out_w, err_r, err_w


def _close(fds: list[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


def _abort(pid: int, cgroup: PayloadCgroup | None) -> None:
    """Kill and reap a child started a moment ago that we cannot watch."""
    if cgroup is not None:
        cgroup.kill()
    with contextlib.suppress(OSError):
        os.killpg(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)
