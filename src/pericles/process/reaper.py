"""Adopting and reaping what payloads leave behind.

A payload's process may start others and exit before them. The server makes itself a child
subreaper, so such orphans become its children instead of init's: it can then kill them and
reap them, even in a container whose PID 1 never reaps.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal

from pericles.process.procfs import processes

log = logging.getLogger("pericles.process")

_PR_SET_CHILD_SUBREAPER = 36
_GROUP_POLL_FIRST = 0.005
_GROUP_POLL_MAX = 0.5


def become_subreaper() -> bool:
    """Make orphaned descendants of this process its children; False where Linux refuses."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        log.warning("could not become a child subreaper: %s", os.strerror(ctypes.get_errno()))
        return False
    return True


def reap_group(pgid: int, loop: asyncio.AbstractEventLoop, delay: float = 0.0) -> None:
    """Reap, as they die, the children of ours left in process group `pgid`.

    Call it once the group has been sent SIGKILL: it polls with a growing delay until no
    child of ours is left in the group. Most groups are empty already and cost one syscall.
    """
    while True:
        try:
            result = os.waitid(os.P_PGID, pgid, os.WEXITED | os.WNOHANG)
        except ChildProcessError:
            return
        if result is None:
            break
    delay = min(max(delay * 2, _GROUP_POLL_FIRST), _GROUP_POLL_MAX)
    loop.call_later(delay, reap_group, pgid, loop, delay)


def kill_strays() -> int:
    """SIGKILL and reap every child of this process; returns how many there were.

    For shutdown, once every payload has ended: what is left is what escaped its payload's
    process group and was adopted by us.
    """
    me = os.getpid()
    strays = [p.pid for p in processes() if p.ppid == me]
    for pid in strays:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    for pid in strays:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
    return len(strays)
