"""A running child: its pipes drained, its exit watched through a pidfd, its group signalled.

Everything here runs as event-loop callbacks on the loop's thread, so no lock is needed:
no callback awaits, and each one sees and leaves the child in a consistent state.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import dataclasses
import fcntl
import logging
import os
import resource
import signal
from collections.abc import Callable

from pericles.process.cgroup import Usage
from pericles.process.contain import Members
from pericles.process.reaper import reap_group
from pericles.process.stdin import StdinWriter

log = logging.getLogger("pericles.process")

#: Receives each chunk read from a child: ("stdout" | "stderr", bytes).
OutputSink = Callable[[str, bytes], None]

_READ_SIZE = 65536
# A read that fills _READ_SIZE means the child writes faster than we wake up: its pipe grows
# to _CHATTY_PIPE and reads to _CHATTY_READ, so each wake-up (an event up to the store and
# every follower) carries up to 16 times as much: one read empties the whole pipe, and the
# per-chunk costs above the read are paid a quarter as often as with 256 KiB reads
# (bench/output.py). Quiet payloads keep the kernel's default.
_CHATTY_PIPE = 1024 * 1024
_CHATTY_READ = _CHATTY_PIPE
#: Reads of a full pipe in one wake-up, at most: a bound that lets other work in between.
_READS_PER_WAKE = 4
# Once the leader has exited and its group is killed, how long stray holders of the pipes
# (a descendant that left the group) may keep them open before we stop reading.
_DRAIN_AFTER_EXIT = 2.0
#: Polling for the last process of a payload to be gone: first and longest delay, seconds.
_GONE_POLL_FIRST = 0.001
_GONE_POLL_MAX = 0.25
# glibc's mallopt parameters, and what the server sets once a chatty payload appears (below).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_MMAP_ABOVE = 4 * _CHATTY_READ
_TRIM_ABOVE = 16 * _CHATTY_READ
_allocator_tuned = False


def _keep_read_buffers() -> None:
    """Let glibc reuse the memory of 1 MiB reads instead of returning it to the kernel.

    Each read of a chatty pipe is a new 1 MiB bytes object, freed soon after (the output log
    keeps 1 MiB or so per stream). By default glibc gives such blocks back to the kernel
    (munmap, or trimming the heap's top past ~2 MiB free), so the next read faults in 256
    fresh zeroed pages: a third of the server's CPU per GiB drained (bench/output.py, perf).
    Fixed thresholds keep blocks below 4 MiB on the heap and up to 16 MiB free at its top,
    memory the process holds anyway while it drains. Not glibc (musl): nothing to do.
    """
    global _allocator_tuned
    if _allocator_tuned:
        return
    _allocator_tuned = True
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (AttributeError, OSError):
        return
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    if mallopt(_M_MMAP_THRESHOLD, _MMAP_ABOVE):
        mallopt(_M_TRIM_THRESHOLD, _TRIM_ABOVE)


@dataclasses.dataclass(frozen=True, slots=True)
class Exit:
    """How a child ended: `exit_code` when it exited, `signal` (a name) when a signal killed it."""

    exit_code: int | None
    signal: str | None
    rusage: resource.struct_rusage | None
    #: What the containment counted for all the payload's processes, where it counts.
    usage: Usage | None = None


def _decode_status(status: int) -> tuple[int | None, str | None]:
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            return None, signal.Signals(sig).name
        except ValueError:
            return None, f"SIG{sig}"
    return os.waitstatus_to_exitcode(status), None


class Child:
    """A started process, leader of its own session and process group.

    `exited` resolves once the process is reaped, every other process of the payload
    (`members`) is gone and its pipes are drained, so by then every byte it wrote has
    reached the sink. When the main process exits, the others are killed; with
    `keep_descendants` they are waited for instead.
    """

    def __init__(
        self,
        pid: int,
        pidfd: int,
        members: Members,
        stdout_fd: int,
        stderr_fd: int,
        sink: OutputSink,
        loop: asyncio.AbstractEventLoop,
        stdin: StdinWriter | None = None,
        keep_descendants: bool = False,
    ) -> None:
        self.pid = pid
        self.members = members
        self._keep = keep_descendants
        #: The main process's own end, before the rest of the payload is gone.
        self._main_exit: Exit | None = None
        #: The server's end of the child's stdin, when it was asked as a pipe or fed data.
        self.stdin = stdin
        self._loop = loop
        self._sink = sink
        self._exit: Exit | None = None
        self.exited: asyncio.Future[Exit] = loop.create_future()
        self._pipes: dict[int, str] = {}
        self._read_size: dict[int, int] = {}
        #: Pipes we tried to widen, whether the kernel let us or not.
        self._widened: set[int] = set()
        # Both pipes come non-blocking (`spawn.launch`): one fewer syscall here on the loop.
        for fd, name in ((stdout_fd, "stdout"), (stderr_fd, "stderr")):
            self._pipes[fd] = name
            self._read_size[fd] = _READ_SIZE
            loop.add_reader(fd, self._on_readable, fd)
        # Holding the pidfd pins the pid: it cannot be reused until we reap it, so signals
        # sent before the reap always reach our child and its group.
        self._pidfd: int | None = pidfd
        loop.add_reader(pidfd, self._on_exit)
        self._drain_timer: asyncio.TimerHandle | None = None
        self._gone_timer: asyncio.TimerHandle | None = None

    @property
    def reaped(self) -> bool:
        return self._exit is not None

    def signal_group(self, sig: signal.Signals) -> bool:
        """Send `sig` to every process of the payload; False when it has already ended."""
        if self._exit is not None:
            return False
        return self.members.signal(sig)

    async def terminate(self, grace: float) -> Exit:
        """SIGTERM to every process, up to `grace` seconds to end, then SIGKILL to all;
        reaped on return."""
        if self.signal_group(signal.SIGTERM):
            # A stopped process only acts on SIGTERM once it runs again.
            self.signal_group(signal.SIGCONT)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self.exited), grace)
        if self._exit is None:
            self.members.kill()
        return await self.exited

    def _on_readable(self, fd: int) -> None:
        # A read that fills its buffer means more is likely there, the writer refilling the
        # pipe on another core meanwhile: read again at once, a few times, rather than go
        # back through the loop and its other callbacks first (as `cat` does, blocking).
        name = self._pipes[fd]
        for _ in range(_READS_PER_WAKE):
            size = self._read_size[fd]
            try:
                data = os.read(fd, size)
            except BlockingIOError:
                return
            except OSError as exc:
                log.warning("pid %d: reading %s failed: %s", self.pid, name, exc)
                data = b""
            if not data:
                self._close_pipe(fd)
                return
            if len(data) == size and fd not in self._widened:
                self._widen(fd)
            self._sink(name, data)
            if len(data) < size:
                return

    def _widen(self, fd: int) -> None:
        self._widened.add(fd)
        try:
            fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, _CHATTY_PIPE)
        except OSError:  # past the per-user pipe budget (EPERM): keep the default size
            return
        self._read_size[fd] = _CHATTY_READ
        _keep_read_buffers()

    def _close_pipe(self, fd: int) -> None:
        self._loop.remove_reader(fd)
        os.close(fd)
        del self._pipes[fd]
        del self._read_size[fd]
        self._widened.discard(fd)
        self._maybe_done()

    def _on_exit(self) -> None:
        # The leader is a zombie now, still holding its pid, so the group id cannot have been
        # reused: kill whatever it left behind before reaping it (unless asked to keep it).
        left = self.members.remaining()
        if left and not self._keep:
            self.members.kill()
        try:
            _, status, rusage = os.wait4(self.pid, os.WNOHANG)
        except ChildProcessError:
            status, rusage = 0, None
        if self._pidfd is not None:
            self._loop.remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = None
        reap_group(self.pid, self._loop)
        if self.stdin is not None:
            self.stdin.abort()
        code, sig = _decode_status(status)
        self._main_exit = Exit(code, sig, rusage)
        self._when_gone(0.0, extras=False, known_empty=not left)

    def _when_gone(self, delay: float, extras: bool, known_empty: bool = False) -> None:
        """Once no process of the payload is left: count, clean up, then end."""
        self._gone_timer = None
        if not known_empty and self.members.remaining():
            delay = min(max(delay * 2, _GONE_POLL_FIRST), _GONE_POLL_MAX)
            self._gone_timer = self._loop.call_later(delay, self._when_gone, delay, True)
            return
        main = self._main_exit
        assert main is not None
        if extras:  # others were killed or waited for: reap those adopted by this server
            self.members.reap()
        usage = self.members.usage()
        self._release(0.0)
        self._exit = dataclasses.replace(main, usage=usage)
        if self._pipes:
            self._drain_timer = self._loop.call_later(_DRAIN_AFTER_EXIT, self._abandon_pipes)
        self._maybe_done()

    def _release(self, delay: float) -> None:
        try:
            if self.members.release():
                return
        except OSError as exc:
            log.warning("pid %d: cannot remove its cgroup: %s", self.pid, exc)
            return
        if delay < 5.0:  # torn down by the kernel a little after the last process is gone
            delay = max(delay * 2, _GONE_POLL_FIRST)
            self._loop.call_later(delay, self._release, delay)
        else:
            log.warning("pid %d: its cgroup stays busy; left in place", self.pid)

    def _abandon_pipes(self) -> None:
        log.warning(
            "pid %d: output still open %.0fs after exit; closing", self.pid, _DRAIN_AFTER_EXIT
        )
        for fd in list(self._pipes):
            self._close_pipe(fd)

    def _maybe_done(self) -> None:
        if self._exit is None or self._pipes or self.exited.done():
            return
        if self._drain_timer is not None:
            self._drain_timer.cancel()
        self.exited.set_result(self._exit)
