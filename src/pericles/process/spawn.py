"""Starting a payload's process.

We start children with `os.posix_spawn` (glibc's vfork+exec) on a spawner thread, so the
loop never waits while a child execs, and reap them through a pidfd watched by the event
loop: measured here it is the fastest path Python has, with no `fork()` of the server's whole
address space. See `bench/throughput.py`. Payloads that ask for a working directory, resource
limits or another user take `forkexec` instead, on the loop's thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import errno
import os
import signal
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


@dataclasses.dataclass(frozen=True, slots=True)
class _Started:
    pid: int
    #: Opened right after the spawn, so the pid is pinned before anything else can reap it.
    pidfd: int
    out_r: int
    err_r: int
    in_w: int


def _start(
    executable: str,
    argv: list[str],
    env: Mapping[str, str],
    stdio: Stdio,
    cwd: str | None,
    limits: Mapping[str, int] | None,
    run_as: RunAs | None,
) -> _Started:
    """Make the pipes and start the process; blocks until it has exec'd (or failed to)."""
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
    return _Started(pid, os.pidfd_open(pid), out_r, err_r, in_w)


def _abandon(future: asyncio.Future[_Started]) -> None:
    if future.cancelled() or future.exception() is not None:
        return
    started = future.result()
    with contextlib.suppress(ProcessLookupError):
        os.killpg(started.pid, signal.SIGKILL)
    os.waitpid(started.pid, 0)
    for fd in (started.pidfd, started.out_r, started.err_r, started.in_w):
        if fd >= 0:
            os.close(fd)


class Spawner:
    """Starts children on `threads` threads of its own, off the event loop.

    `os.posix_spawn` releases the GIL while the child execs (0.3 ms or more for each), so on
    a thread of its own the loop goes on serving requests and reaping meanwhile, and two
    threads keep two children exec'ing at once on two cores. `fork` is different: it copies
    the server's page tables and must not race other threads' locks into the child, so
    payloads that need `fork_exec` (cwd, limits, run_as) start on the loop's thread as before.
    """

    def __init__(self, threads: int = 2) -> None:
        self._pool = concurrent.futures.ThreadPoolExecutor(threads, "pericles-spawn")

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    async def spawn(
        self,
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

        `executable` is the file to exec (see `exe.resolve`), else `cmd` looked up on env's
        PATH; argv[0] stays `cmd`. `run_as` drops to that user and group before exec.
        Raises `SpawnFailed` when exec fails (no such file, permission denied, bad format).
        """
        stdio = stdio or Stdio()
        if executable is None:
            executable = resolve_executable(cmd, env.get("PATH", DEFAULT_PATH))
        argv = [cmd, *params]
        args = (executable, argv, env, stdio, cwd, limits, run_as)
        if cwd is None and not limits and run_as is None:
            future = loop.run_in_executor(self._pool, _start, *args)
            try:
                started = await asyncio.shield(future)
            except asyncio.CancelledError:
                # The thread goes on: whatever it starts, nobody will watch. End it there.
                future.add_done_callback(_abandon)
                raise
        else:
            started = _start(*args)
        writer = StdinWriter(started.in_w, loop, stdio.limit) if started.in_w >= 0 else None
        if writer is not None and stdio.data is not None:
            writer.write(stdio.data)
            writer.close()
        return Child(started.pid, started.out_r, started.err_r, sink, loop, writer, started.pidfd)
