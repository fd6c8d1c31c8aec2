"""Resource limits for a payload's process, applied with setrlimit in the child before exec."""

from __future__ import annotations

import resource
from collections.abc import Mapping

#: The spec's limit names and the rlimit each one sets.
RLIMITS: dict[str, int] = {
    "cpu_seconds": resource.RLIMIT_CPU,
    "memory_bytes": resource.RLIMIT_AS,
    "max_processes": resource.RLIMIT_NPROC,
    "max_open_files": resource.RLIMIT_NOFILE,
    "max_file_size": resource.RLIMIT_FSIZE,
}


def apply_limits(limits: Mapping[str, int]) -> None:
    """Set each limit as the soft and hard limit of the calling process.

    Runs in the forked child only: the server's own limits are never touched. A value above
    the current hard limit is lowered to it, since an unprivileged process cannot raise it.
    The CPU limit's hard limit is one second later, so the payload gets SIGXCPU (which it
    may catch to clean up) before the kernel's SIGKILL.
    """
    for name, value in limits.items():
        which = RLIMITS[name]
        _, current = resource.getrlimit(which)
        soft = hard = value
        if which == resource.RLIMIT_CPU:
            hard = value + 1
        if current != resource.RLIM_INFINITY:
            soft, hard = min(soft, current), min(hard, current)
        resource.setrlimit(which, (soft, hard))
