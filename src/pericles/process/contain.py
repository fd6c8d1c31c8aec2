"""What a payload's process started, found and ended as one: its cgroup, or its group and session.

`Containment` is chosen once at start (`Containment.create`): cgroup v2 where this server
can create cgroups, else the fallback. Each started payload gets `Members`:

- `CgroupMembers`: every descendant, whatever it does (see `cgroup`).
- `SessionMembers` (fallback): the process group and the session of the payload's process,
  found in /proc. A descendant that calls `setsid()` and then leaves that new session's
  group is out of reach: it is adopted by this server (a child subreaper) when its parent
  dies, and killed at shutdown, but outlives its payload's end. Documented in SECURITY.md.
"""

from __future__ import annotations

import abc
import contextlib
import logging
import os
import signal
from pathlib import Path

from pericles.process.cgroup import Cgroups, PayloadCgroup, Usage, kill_cgroup
from pericles.process.procfs import processes

log = logging.getLogger("pericles.process")


class Members(abc.ABC):
    """The processes of one payload besides its main process, `pid`."""

    def __init__(self, pid: int) -> None:
        self.pid = pid

    @abc.abstractmethod
    def signal(self, sig: signal.Signals) -> bool:
        """Send `sig` to every process of the payload; False when none was left."""

    @abc.abstractmethod
    def kill(self) -> None:
        """SIGKILL every process of the payload."""

    @abc.abstractmethod
    def remaining(self) -> bool:
        """Whether any process of the payload is alive, its reaped main process aside."""

    def reap(self) -> None:
        """Reap the payload's processes that were adopted by this server once they are dead."""
        me = os.getpid()
        for p in processes():
            if p.ppid == me and p.state == "Z" and p.pid != self.pid and self._owns(p.pid):
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(p.pid, os.WNOHANG)

    @abc.abstractmethod
    def _owns(self, pid: int) -> bool: ...

    def usage(self) -> Usage | None:
        """CPU time of all its processes, where the containment counts it."""
        return None

    def release(self) -> bool:
        """Free what containment holds for the payload; False while it cannot be yet."""
        return True


class CgroupMembers(Members):
    def __init__(self, pid: int, cgroup: PayloadCgroup) -> None:
        super().__init__(pid)
        self.cgroup = cgroup

    def signal(self, sig: signal.Signals) -> bool:
        sent = self.cgroup.signal(sig)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, sig)  # the main process, when it is a zombie not listed
            sent += 1
        return sent > 0

    def kill(self) -> None:
        self.cgroup.kill()

    def remaining(self) -> bool:
        return self.cgroup.populated()

    def _owns(self, pid: int) -> bool:
        try:
            with open(f"/proc/{pid}/cgroup") as f:
                return f.read().rstrip().endswith("/" + self.cgroup.path.name)
        except OSError:
            return False

    def usage(self) -> Usage | None:
        return self.cgroup.usage()

    def release(self) -> bool:
        return self.cgroup.remove()


class SessionMembers(Members):
    def _members(self) -> list[int]:
        return [
            p.pid
            for p in processes()
            if (p.pgrp == self.pid or p.session == self.pid)
            and p.state not in ("Z", "X")
            and p.pid != os.getpid()
        ]

    def signal(self, sig: signal.Signals) -> bool:
        sent = False
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, sig)
            sent = True
        for pid in self._members():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
                sent = True
        return sent

    def kill(self) -> None:
        self.signal(signal.SIGKILL)

    def remaining(self) -> bool:
        return bool([p for p in self._members() if p != self.pid])

    def _owns(self, pid: int) -> bool:
        try:
            return os.getpgid(pid) == self.pid or os.getsid(pid) == self.pid
        except OSError:
            return False


class Containment:
    """How payloads are contained here: `cgroups` when available, else group and session."""

    def __init__(self, cgroups: Cgroups | None, reason: str | None = None) -> None:
        self.cgroups = cgroups
        #: Why cgroups are not used, when they are not.
        self.reason = reason

    @classmethod
    def create(cls, mode: str = "auto") -> Containment:
        """`mode`: "auto" (cgroups if possible), "cgroup" (raise `OSError` if not), "session"."""
        if mode == "session":
            return cls(None, "--containment session")
        found = Cgroups.create()
        if isinstance(found, str):
            if mode == "cgroup":
                raise OSError(f"--containment cgroup: {found}")
            return cls(None, found)
        killed = found.sweep_dead_servers()
        if killed:
            log.warning("killed %d process(es) left in the cgroups of servers that died", killed)
        return cls(found)

    @property
    def kind(self) -> str:
        return "cgroup" if self.cgroups is not None else "session"

    def describe(self) -> str:
        if self.cgroups is not None:
            return f"cgroup v2, one per payload under {self.cgroups.where}"
        return f"process group and session only ({self.reason})"

    def new_cgroup(self, payload_id: str) -> PayloadCgroup | None:
        """A cgroup for a payload about to start, when cgroups are used; raises `OSError`."""
        return self.cgroups.new(payload_id) if self.cgroups is not None else None

    def members(self, pid: int, cgroup: PayloadCgroup | None) -> Members:
        return CgroupMembers(pid, cgroup) if cgroup is not None else SessionMembers(pid)

    def kill_leftovers(self, payload_id: str) -> int | None:
        """Kill what an earlier server started for `payload_id`, found by cgroup name.

        How many processes were killed; None when cgroups are not used here.
        """
        if self.cgroups is None:
            return None
        killed = 0
        for path in self.cgroups.find(payload_id):
            killed += len(_procs(path))
            kill_cgroup(path)
        return killed

    def close(self) -> None:
        if self.cgroups is not None:
            self.cgroups.close()


def _procs(path: Path) -> list[int]:
    try:
        return [int(p) for p in (path / "cgroup.procs").read_text().split()]
    except OSError:
        return []
