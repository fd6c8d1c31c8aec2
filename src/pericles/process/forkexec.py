"""The slower spawn path, for payloads that ask for a working directory or resource limits,
and for every payload under `--run-as` (posix_spawn cannot change the uid).

`os.posix_spawn` cannot set rlimits, and Python 3.11 exposes no chdir file action, so those
payloads are started with `os.fork` and the child sets things up before `execve`. Measured
here (spawn and wait for /bin/true from a process with a 60 MiB heap) it costs about 4.5-6 ms
against 1.4-1.7 ms for posix_spawn, since fork copies the page tables: only payloads that
ask for these features pay it. The parent blocks on the report pipe until the child's exec.

Why not exec through util-linux `prlimit` or `env --chdir`: they report a failed exec as
text on the payload's stderr and an exit code, so "Exec format error" or a missing `#!`
interpreter would not reach the seed's `error:start('<cmd>':<reason>` status. Here the child
sends exec's errno back through a close-on-exec pipe, as `subprocess` does: EOF means exec
succeeded, a number means it failed with that errno.
"""

from __future__ import annotations

import errno
import os
import signal
from collections.abc import Mapping, Sequence

from pericles.process.identity import RunAs, drop_privileges
from pericles.process.limits import apply_limits

# Python ignores SIGPIPE and SIGXFSZ for itself; an ignored signal stays ignored across exec,
# so a child would never die of a broken pipe (or an oversized file) as it does from a shell.
RESET_SIGNALS = (signal.SIGPIPE, signal.SIGXFSZ)


def _child(
    executable: str | int,
    argv: Sequence[str],
    env: Mapping[str, str],
    fds: tuple[int, int, int],
    cwd: str | int | None,
    limits: Mapping[str, int],
    run_as: RunAs | None,
    cgroup_procs: int,
) -> None:
    if cgroup_procs >= 0:
        # Into the payload's cgroup before anything else runs: all it starts is born there.
        os.write(cgroup_procs, b"0")
    os.setsid()
    for target, fd in enumerate(fds):
        os.dup2(fd, target)  # dup2's copy is inheritable; the originals are close-on-exec
    for sig in RESET_SIGNALS:
        signal.signal(sig, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, ())
    # Limits first: only lowered, which needs no privilege. Then the drop, so that the
    # chdir and the exec are checked against the dropped user's rights, not root's.
    apply_limits(limits)
    if run_as is not None:
        drop_privileges(run_as)
    if isinstance(cwd, int):
        os.fchdir(cwd)  # the directory that was checked, whatever its path points at now
    elif cwd is not None:
        os.chdir(cwd)
    if isinstance(executable, int):
        # fexecve: the file that was hashed. Inheritable, so that a `#!` script's
        # interpreter can open the /dev/fd/N it is handed.
        os.set_inheritable(executable, True)
    os.execve(executable, list(argv), env)


def fork_exec(
    executable: str | int,
    argv: Sequence[str],
    env: Mapping[str, str],
    fds: tuple[int, int, int],
    cwd: str | int | None,
    limits: Mapping[str, int],
    run_as: RunAs | None = None,
    cgroup_procs: int = -1,
) -> int:
    """Start `executable` with stdin/stdout/stderr on `fds`, in `cwd`, under `limits`, as `run_as`,
    in the cgroup whose `cgroup.procs` is open as `cgroup_procs` (-1: this server's).

    `executable` may be an open file's descriptor (fexecve) and `cwd` an open directory's.

    Returns the pid; raises `OSError` with exec's (or chdir's, setrlimit's, setuid's) errno.
    """
    report_r, report_w = os.pipe()
    try:
        pid = os.fork()
    except OSError:
        os.close(report_r)
        os.close(report_w)
        raise
    if pid == 0:  # pragma: no cover - the child never returns to pytest
        code = errno.EIO
        try:
            _child(executable, argv, env, fds, cwd, limits, run_as, cgroup_procs)
        except OSError as exc:
            code = exc.errno or errno.EIO
        finally:
            os.write(report_w, str(code).encode())
            os._exit(127)
    os.close(report_w)
    try:
        # Blocks the loop only until the child's exec, a millisecond or so.
        report = b""
        while chunk := os.read(report_r, 32):
            report += chunk
    finally:
        os.close(report_r)
    if report:
        os.waitpid(pid, 0)
        raise OSError(int(report), os.strerror(int(report)))
    return pid
