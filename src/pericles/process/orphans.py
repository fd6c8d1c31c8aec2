"""Killing what an earlier server left running: payload process groups that outlived it.

A server killed with SIGKILL cannot stop its payloads; their process groups run on, adopted
by init. The next server, started on the same store, kills them by the process group id the
record holds. Process ids are reused, so before killing anything we check, from /proc, that
each process is one that payload could have started: same boot (the caller compares
`boot_id()` with the one noted by the earlier server), and started no earlier than the
payload did. A group that appeared later under a reused id could still match: that needs
the pid counter to wrap around between the two servers, which we accept.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
from pathlib import Path

from pericles.process.procfs import processes

log = logging.getLogger("pericles.process")

_TICKS = os.sysconf("SC_CLK_TCK")
#: /proc/stat's boot time has whole seconds, and a record's start is noted just after spawn.
_CLOCK_SLACK = 2.0


def boot_id() -> str | None:
    """This boot's random id (Linux), or None where the system does not tell."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip() or None
    except OSError:
        return None


def _boot_time() -> float:
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("btime "):
            return float(line.split()[1])
    raise OSError("no btime in /proc/stat")


def _group(pgid: int, boot: float) -> list[tuple[int, float]]:
    """(pid, start time as a Unix time) of every live process in group `pgid` or in the
    session it leads (a payload's process leads both)."""
    return [
        (p.pid, boot + p.start_ticks / _TICKS)
        for p in processes()
        if (p.pgrp == pgid or p.session == pgid) and p.state not in ("Z", "X")
    ]


def kill_group(pgid: int, started_after: float) -> int:
    """SIGKILL the processes of group (and session) `pgid` that started at or after `started_after`
    (a Unix time); returns how many were sent the signal.

    Processes that are gone, or not ours to kill, are passed over.
    """
    if pgid <= 1 or pgid == os.getpgrp():
        return 0
    try:
        members = _group(pgid, _boot_time())
    except OSError as exc:
        log.warning("cannot look for process group %d: %s", pgid, exc)
        return 0
    killed = 0
    for pid, started in members:
        if started < started_after - _CLOCK_SLACK:
            log.warning("process %d in group %d predates its payload: not killed", pid, pgid)
            continue
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
            killed += 1
    return killed
