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

from pericles.process import cspawn
from pericles.process.cgroup import PayloadCgroup, Stage
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
    stdin_action: cspawn.Action = (
        ("dup2", fds[0], 0) if fds[0] >= 0 else ("open", 0, "/dev/null", os.O_RDONLY, 0)
    )
    actions: list[cspawn.Action] = [stdin_action, ("dup2", fds[1], 1), ("dup2", fds[2], 2)]
    if isinstance(executable, int):
        # The open file itself. dup2 onto itself clears close-on-exec in the child only: a
        # `#!` script's interpreter is handed /proc/self/fd/N and must still find it open.
        actions.append(("dup2", executable, executable))
        executable = f"/proc/self/fd/{executable}"
    if cspawn.AVAILABLE:
        # The GIL released while the child execs (`os.posix_spawn` keeps it): see cspawn.
        return cspawn.spawn(executable, argv, env, actions, RESET_SIGNALS)
    kinds = {"dup2": os.POSIX_SPAWN_DUP2, "open": os.POSIX_SPAWN_OPEN}
    return os.posix_spawn(
        executable,
        argv,
        env,
        file_actions=[(kinds[str(kind)], *rest) for kind, *rest in actions],
        setsid=True,
        setsigdef=RESET_SIGNALS,
        setsigmask=(),
    )


@dataclasses.dataclass(slots=True)
class Launch:
    """Everything needed to start one child, prepared on the loop; `launch` runs it."""

    executable: str | int
    argv: list[str]
    env: Mapping[str, str]
    stdio: Stdio
    directory: str | int | None
    limits: Mapping[str, int] | None
    run_as: RunAs | None
    containment: Containment
    cgroup_name: str


@dataclasses.dataclass(slots=True)
class Launched:
    """A child just started, not yet watched: its pid pinned by `pidfd`, our pipe ends."""

    pid: int
    pidfd: int
    cgroup: PayloadCgroup | None
    in_w: int
    out_r: int
    err_r: int


def prepare(
    cmd: str,
    params: Sequence[str],
    env: Mapping[str, str],
    *,
    stdio: Stdio | None = None,
    cwd: str | None = None,
    limits: Mapping[str, int] | None = None,
    executable: str | int | None = None,
    run_as: RunAs | None = None,
    containment: Containment | None = None,
    payload_id: str | None = None,
    argv0: str | None = None,
    cwd_fd: int | None = None,
) -> Launch:
    """What `launch` needs to start `cmd` (see `spawn` for the arguments)."""
    if executable is None:
        executable = resolve_executable(cmd, env.get("PATH", DEFAULT_PATH))
    return Launch(
        executable,
        [argv0 or cmd, *params],
        env,
        stdio or Stdio(),
        cwd_fd if cwd_fd is not None else cwd,
        limits,
        run_as,
        containment or _SESSION_ONLY,
        payload_id or uuid.uuid4().hex,
    )


def needs_fork(launch: Launch) -> bool:
    """Whether it takes `fork_exec` (cwd, limits, another user) rather than posix_spawn."""
    return launch.directory is not None or bool(launch.limits) or launch.run_as is not None


@dataclasses.dataclass(slots=True)
class Opened:
    """What one start holds: the payload's cgroup (once `execute` made it), the pipes,
    `ours` and `theirs` (the child's ends, closed once it has them)."""

    cgroup: PayloadCgroup | None
    fds: tuple[int, int, int, int, int, int]
    ours: list[int]
    theirs: list[int]

    def discard(self) -> None:
        """The start failed: nothing of it may be left."""
        _close(self.theirs + self.ours)
        self.theirs, self.ours = [], []
        if self.cgroup is not None:
            with contextlib.suppress(OSError):
                self.cgroup.remove()

    def abort(self, pid: int) -> None:
        """It started but nobody will watch it: kill and reap it, then `discard`."""
        _abort(pid, self.cgroup)
        self.discard()


def open_for(job: Launch) -> Opened:
    """Make the pipes for `job`; raises `SpawnFailed`. On the loop's thread: a few cheap
    syscalls here spare the spawner thread as many waits for the GIL."""
    ours: list[int] = []
    theirs: list[int] = []
    try:
        fds = _pipes(job.stdio, ours, theirs)
        if fds[0] < 0 and needs_fork(job):
            in_r = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)
            theirs.append(in_r)
            fds = (in_r, fds[1], fds[2], fds[3], fds[4], fds[5])
    except OSError as exc:
        Opened(None, (-1, -1, -1, -1, -1, -1), ours, theirs).discard()
        raise SpawnFailed(exc.errno or errno.EIO) from exc
    return Opened(None, fds, ours, theirs)


def execute(job: Launch, opened: Opened, stage: Stage | None = None) -> int:
    """Start the child and move it into its cgroup: blocks until it has exec'd, and may run
    on any thread (see `spawner`); the pid, or `SpawnFailed` with nothing left running.

    Calls from threads without a `stage` (see `cgroup.Stage`) must not overlap:
    `PayloadCgroup.join` takes whatever else is in the server's leaf for the child's. The
    payload's cgroup is made here too (`opened.cgroup`): a mkdir in cgroupfs takes a while,
    better spent off the loop.
    """
    in_r, _, _, out_w, _, err_w = opened.fds
    pid = 0
    try:
        cgroup = opened.cgroup = job.containment.new_cgroup(job.cgroup_name)
        if not needs_fork(job):
            pid = _posix_spawn(job.executable, job.argv, job.env, [in_r, out_w, err_w])
            if cgroup is not None:
                cgroup.join(pid, stage)
        else:
            pid = fork_exec(
                job.executable,
                job.argv,
                job.env,
                (in_r, out_w, err_w),
                job.directory,
                job.limits or {},
                job.run_as,
                cgroup.procs_fd if cgroup is not None else -1,
            )
    except OSError as exc:
        if pid:
            _abort(pid, opened.cgroup)
        raise SpawnFailed(exc.errno or errno.EIO) from exc
    return pid


def finish(opened: Opened, pid: int) -> Launched:
    """Back on the loop: the child's ends closed, its pid pinned by a pidfd, our read ends
    non-blocking. The child is ours and unreaped until we wait for it, so its pid cannot be
    reused in between. Raises `SpawnFailed`, the child killed."""
    _close(opened.theirs)
    opened.theirs = []
    try:
        # Without the pidfd we could not watch the child: it must not run unwatched.
        pidfd = os.pidfd_open(pid)
    except OSError as exc:
        opened.abort(pid)
        raise SpawnFailed(exc.errno or errno.EIO) from exc
    if opened.cgroup is not None:
        opened.cgroup.close_fd()
    _, in_w, out_r, _, err_r, _ = opened.fds
    for fd in (out_r, err_r):
        os.set_blocking(fd, False)
    return Launched(pid, pidfd, opened.cgroup, in_w, out_r, err_r)


def launch(job: Launch) -> Launched:
    """`open_for`, `execute` and `finish` on the calling thread; raises `SpawnFailed`."""
    opened = open_for(job)
    try:
        pid = execute(job, opened)
    except SpawnFailed:
        opened.discard()
        raise
    return finish(opened, pid)


def watch(
    job: Launch,
    started: Launched,
    sink: OutputSink,
    loop: asyncio.AbstractEventLoop,
    keep_descendants: bool = False,
) -> Child:
    """The `Child` that drains, watches and signals a launched process, on `loop`."""
    members = job.containment.members(started.pid, started.cgroup)
    in_w = started.in_w
    writer = StdinWriter(in_w, loop, job.stdio.limit) if in_w >= 0 else None
    if writer is not None and job.stdio.data is not None:
        writer.write(job.stdio.data)
        writer.close()
    return Child(
        started.pid,
        started.pidfd,
        members,
        started.out_r,
        started.err_r,
        sink,
        loop,
        writer,
        keep_descendants,
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
    """Start `cmd` with `params` in a new session, output to pipes, on the calling thread.

    `executable` is the file to exec: a path (see `exe.open_target`) or an open file's
    descriptor, executed as is; else `cmd` looked up on env's PATH. argv[0] is `argv0`, else
    `cmd`. `cwd_fd`, an open directory, is where the child starts (`fchdir`), else `cwd`.
    `run_as` drops to that user and group before exec. With `containment` using cgroups,
    the process runs in a new cgroup named `payload_id`. Raises `SpawnFailed` (see `launch`).
    The server starts its payloads through a `Spawner` instead, off the event loop.
    """
    job = prepare(
        cmd,
        params,
        env,
        stdio=stdio,
        cwd=cwd,
        limits=limits,
        executable=executable,
        run_as=run_as,
        containment=containment,
        payload_id=payload_id,
        argv0=argv0,
        cwd_fd=cwd_fd,
    )
    return watch(job, launch(job), sink, loop, keep_descendants)


_SESSION_ONLY = Containment(None, "not asked for")


def _pipes(stdio: Stdio, ours: list[int], theirs: list[int]) -> tuple[int, int, int, int, int, int]:
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
