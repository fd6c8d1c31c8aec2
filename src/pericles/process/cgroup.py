"""Containment by cgroup v2: each payload in its own cgroup, named after the payload id.

A process group or a session is something a payload may leave (`setsid`, `setpgid`); a
cgroup is not: every descendant is born in its parent's cgroup and only a process with
write access to another cgroup's `cgroup.procs` can move out. Killing the cgroup
(`cgroup.kill`, Linux 5.14+; else freeze, SIGKILL each member, thaw) ends every
descendant, however it detached itself.

Layout, under the cgroup this server was started in (a delegated subtree under systemd's
`Delegate=yes`, or the root of the unified hierarchy in a container):

    <start cgroup>/pericles/<server>/server        this server, moved here at start
    <start cgroup>/pericles/<server>/<payload id>  one per running payload

`<server>` is `<pid>-<start ticks>` of the server: a later server finds the cgroups of
one that died by listing `pericles/` and kills what is left in them. The server moves into
a leaf of its own so that no cgroup that has children holds processes ("no internal
processes"), and so that the join below can see every process born in the wrong place.

    <start cgroup>/pericles/<server>/server/spawn<N>   a spawner thread's own (threaded)

Joining: `fork_exec` children write themselves into their cgroup before `execve`: no
window. `posix_spawn` cannot (Python has no `clone3(CLONE_INTO_CGROUP)`), so right after
it returns the server moves the child, then sweeps where the child was born: anything else
found there was forked by that child before the move, and is moved too, until only the
server is left. Nothing the payload starts is left outside; measured in docs/benchmarks.md.

Where a child is born is the cgroup of the *thread* that started it. Each spawner thread
moves itself into a threaded cgroup of its own under the leaf (`Stage`): what it starts is
born there, apart from what any other thread starts, so two threads may start children at
once and each sweep still finds only its own child's strays. Without a stage (no threaded
cgroups here) children are born in the leaf, and starts must take turns.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import logging
import os
import signal
import threading
import time
from pathlib import Path

log = logging.getLogger("pericles.process")

_GROUP = "pericles"
_LEAF = "server"
#: Polling a freeze until the kernel says it is done (the fallback without cgroup.kill).
_FREEZE_WAIT = 1.0


def _cgroup2_mount() -> Path | None:
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                left, _, right = line.partition(" - ")
                if right.split(" ", 1)[0] == "cgroup2":
                    return Path(left.split()[4])
    except OSError:
        return None
    return None


def _own_cgroup() -> str | None:
    try:
        with open("/proc/self/cgroup") as f:
            for line in f:
                if line.startswith("0::"):
                    return line[3:].strip()
    except OSError:
        return None
    return None


def _start_ticks(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    return int(stat[stat.rindex(")") + 2 :].split()[19])


def _server_alive(name: str) -> bool:
    pid, _, ticks = name.partition("-")
    if not pid.isdigit() or not ticks.isdigit():
        return False
    return _start_ticks(int(pid)) == int(ticks)


def _pids(path: Path) -> list[int]:
    try:
        return [int(p) for p in (path / "cgroup.procs").read_text().split()]
    except OSError:
        return []


def _read(path: str) -> bytes:
    """A small cgroupfs file at once: plain syscalls, a fraction of `Path.read_text`'s cost
    (these are read on the loop for every payload that ends)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return os.read(fd, 65536)
    finally:
        os.close(fd)


def _write(path: Path, value: str) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def kill_cgroup(path: Path) -> None:
    """SIGKILL every process in the cgroup `path` at once; nothing may escape it meanwhile."""
    try:
        _write(path / "cgroup.kill", "1")
        return
    except FileNotFoundError:
        if not path.exists():
            return
    # No cgroup.kill (before Linux 5.14): a frozen process cannot fork, so a kill of each
    # member of a frozen cgroup misses none.
    with contextlib.suppress(OSError):
        _write(path / "cgroup.freeze", "1")
        deadline = time.monotonic() + _FREEZE_WAIT
        while "frozen 1" not in (path / "cgroup.events").read_text():
            if time.monotonic() > deadline:
                break
            time.sleep(0.001)
    for pid in _pids(path):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(OSError):
        _write(path / "cgroup.freeze", "0")


def populated(path: Path) -> bool:
    """Whether any process is left in the cgroup `path`."""
    try:
        return "populated 1" in (path / "cgroup.events").read_text()
    except OSError:
        return False


def remove(path: Path) -> bool:
    """Remove an empty cgroup; False while processes remain (or are still being torn down)."""
    try:
        path.rmdir()
    except FileNotFoundError:
        return True
    except OSError as exc:
        if exc.errno == errno.EBUSY:
            return False
        raise
    return True


@dataclasses.dataclass(frozen=True, slots=True)
class Usage:
    """CPU seconds of every process the cgroup held, waited for or not; peak memory if known."""

    user_seconds: float
    system_seconds: float
    max_rss_bytes: int | None


def _read_pids(fd: int) -> list[int]:
    """The pids listed by an open `cgroup.procs`: one pread, no path walk."""
    data = b""
    while chunk := os.pread(fd, 65536, len(data)):
        data += chunk
    return [int(p) for p in data.split()]


class Stage:
    """A threaded cgroup that one spawner thread has moved itself into (`Cgroups.stage`).

    `threads_fd` is its `cgroup.threads`, open for reading: a threaded cgroup lists its
    members there (its `cgroup.procs` cannot be read). `tid` is the spawner thread's own.
    """

    def __init__(self, path: Path, threads_fd: int, tid: int) -> None:
        self.path = path
        self.threads_fd = threads_fd
        self.tid = tid


class PayloadCgroup:
    """One payload's cgroup. `procs_fd` is open for a forked child to write itself into.

    `leaf_fd` is the server's leaf `cgroup.procs`, open for reading, owned by `Cgroups`.
    """

    def __init__(self, path: Path, leaf_fd: int, memory: bool = False) -> None:
        self.path = path
        self._dir = str(path)
        self._leaf_fd = leaf_fd
        #: Whether it has the memory controller (`memory.peak`).
        self._memory = memory
        self.procs_fd = os.open(path / "cgroup.procs", os.O_WRONLY | os.O_CLOEXEC)

    def __str__(self) -> str:
        return str(self.path)

    def join(self, pid: int, stage: Stage | None = None) -> None:
        """Move `pid`, just started by posix_spawn from `stage` (else from the leaf), and all
        it forked meanwhile, in here.

        Whatever else is where `pid` was born, the server's threads aside, was born of `pid`
        before it moved: a payload's child inherits the cgroup its parent is in when it
        forks, and every child started there leaves it before the next one is started.
        Raises `OSError` when the move fails for another reason than the process being gone.
        """
        with contextlib.suppress(ProcessLookupError):
            os.write(self.procs_fd, str(pid).encode())
        ours = {os.getpid()} if stage is None else {os.getpid(), stage.tid}
        fd = self._leaf_fd if stage is None else stage.threads_fd
        tried: set[int] = set()
        # Read through an open descriptor: each syscall is one more wait for the GIL on the
        # spawner thread while the loop is busy. A thread's id moves its whole process.
        while strays := [p for p in _read_pids(fd) if p not in ours and p not in tried]:
            for stray in strays:
                tried.add(stray)
                with contextlib.suppress(ProcessLookupError):
                    os.write(self.procs_fd, str(stray).encode())

    def pids(self) -> list[int]:
        return _pids(self.path)

    def close_fd(self) -> None:
        if self.procs_fd >= 0:
            os.close(self.procs_fd)
            self.procs_fd = -1

    def signal(self, sig: signal.Signals) -> int:
        """Send `sig` to every member; how many got it."""
        sent = 0
        for pid in _pids(self.path):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
                sent += 1
        return sent

    def kill(self) -> None:
        kill_cgroup(self.path)

    def populated(self) -> bool:
        try:
            return b"populated 1" in _read(self._dir + "/cgroup.events")
        except OSError:
            return False

    def usage(self) -> Usage | None:
        try:
            fields = dict(line.split() for line in _read(self._dir + "/cpu.stat").splitlines())
            user = int(fields[b"user_usec"]) / 1e6
            system = int(fields[b"system_usec"]) / 1e6
        except (OSError, KeyError, ValueError):
            return None
        peak: int | None = None
        if self._memory:
            with contextlib.suppress(OSError, ValueError):
                peak = int(_read(self._dir + "/memory.peak"))
        return Usage(user, system, peak)

    def remove(self) -> bool:
        self.close_fd()
        return remove(self.path)


class Cgroups:
    """This server's cgroup subtree; `create()` makes it, or says why it cannot."""

    def __init__(self, group: Path, home: Path, origin: Path) -> None:
        #: `<start cgroup>/pericles`: every server's subtree, found again after a crash.
        self.group = group
        #: `<group>/<server>`: this server's.
        self.home = home
        self._leaf = home / _LEAF
        self._origin = origin
        self._leaf_fd = os.open(self._leaf / "cgroup.procs", os.O_RDONLY | os.O_CLOEXEC)
        try:
            self._memory = b"memory" in _read(str(home / "cgroup.subtree_control")).split()
        except OSError:
            self._memory = False

    @classmethod
    def create(cls) -> Cgroups | str:
        """This server moved into a fresh subtree; or the reason cgroups cannot be used."""
        mount = _cgroup2_mount()
        own = _own_cgroup()
        if mount is None or own is None:
            return "no cgroup v2 hierarchy is mounted"
        origin = mount / own.lstrip("/")
        group = origin / _GROUP
        me = os.getpid()
        home = group / f"{me}-{_start_ticks(me)}"
        try:
            (home / _LEAF).mkdir(parents=True, exist_ok=True)
            _write(home / _LEAF / "cgroup.procs", str(me))
        except OSError as exc:
            with contextlib.suppress(OSError):
                (home / _LEAF).rmdir()
                home.rmdir()
            return f"cannot create cgroups under {origin}: {exc.strerror}"
        return cls(group, home, origin)

    @property
    def where(self) -> str:
        return str(self.home)

    def new(self, payload_id: str) -> PayloadCgroup:
        """A new cgroup for a payload about to start; raises `OSError`."""
        path = self.home / payload_id
        path.mkdir()
        try:
            return PayloadCgroup(path, self._leaf_fd, self._memory)
        except OSError:
            with contextlib.suppress(OSError):
                path.rmdir()
            raise

    def stage(self, name: str) -> Stage | None:
        """Move the calling thread into a new threaded cgroup `name` under the leaf, where
        the children it starts are born; None when this kernel or delegation refuses."""
        path = self._leaf / name
        tid = threading.get_native_id()
        try:
            path.mkdir()
        except OSError as exc:
            log.info("no threaded cgroup for the spawner (%s): starts take turns", exc.strerror)
            return None
        try:
            _write(path / "cgroup.type", "threaded")
            _write(path / "cgroup.threads", str(tid))
            fd = os.open(path / "cgroup.threads", os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            log.info("no threaded cgroup for the spawner (%s): starts take turns", exc.strerror)
            with contextlib.suppress(OSError):
                _write(self._leaf / "cgroup.threads", str(tid))
            _remove_soon(path)
            return None
        return Stage(path, fd, tid)

    def find(self, payload_id: str) -> list[Path]:
        """The cgroups named after `payload_id`, under any server's subtree, dead or alive."""
        try:
            servers = list(self.group.iterdir())
        except OSError:
            return []
        return [s / payload_id for s in servers if (s / payload_id).is_dir()]

    def sweep_dead_servers(self) -> int:
        """Kill what servers that died left in their cgroups, and remove those; how many."""
        killed = 0
        try:
            servers = [s for s in self.group.iterdir() if s.is_dir() and s != self.home]
        except OSError:
            return 0
        for server in servers:
            if _server_alive(server.name):
                continue
            for child in [c for c in server.iterdir() if c.is_dir()]:
                if populated(child):
                    killed += len(_pids(child))
                    kill_cgroup(child)  # the leaf: its stages with it
                _remove_tree(child)
            _remove_soon(server)
        return killed

    def close(self) -> None:
        """Kill what is left in payload cgroups, move back to where we started, clean up."""
        if self._leaf_fd >= 0:
            os.close(self._leaf_fd)
            self._leaf_fd = -1
        for child in [c for c in self.home.iterdir() if c.is_dir() and c != self._leaf]:
            kill_cgroup(child)
            _remove_soon(child)
        with contextlib.suppress(OSError):
            _write(self._origin / "cgroup.procs", str(os.getpid()))  # with every thread
        _remove_tree(self._leaf)
        _remove_soon(self.home)


def _remove_tree(path: Path) -> None:
    """Remove `path` and the cgroups under it (the leaf's stages), deepest first."""
    with contextlib.suppress(OSError):
        for child in [c for c in path.iterdir() if c.is_dir()]:
            _remove_tree(child)
    _remove_soon(path)


def _remove_soon(path: Path, wait: float = 1.0) -> bool:
    """Remove `path` once the kernel has torn down its killed members, within `wait` s."""
    deadline = time.monotonic() + wait
    while True:
        try:
            if remove(path):
                return True
        except OSError:
            return False
        if time.monotonic() > deadline:
            log.warning("cgroup %s still busy after %.0fs: left in place", path, wait)
            return False
        time.sleep(0.002)
