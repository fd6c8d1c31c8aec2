"""Reading the process table from /proc: the one place that parses /proc/<pid>/stat."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator


@dataclasses.dataclass(frozen=True, slots=True)
class ProcStat:
    pid: int
    state: str
    ppid: int
    pgrp: int
    session: int
    #: When the process started, in clock ticks after boot.
    start_ticks: int


def processes() -> Iterator[ProcStat]:
    """Every process still listed in /proc; those that vanish while we read are passed over."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        # The command name may hold spaces and parentheses: split after the last ')'.
        fields = stat[stat.rindex(")") + 2 :].split()
        yield ProcStat(
            int(entry), fields[0], int(fields[1]), int(fields[2]), int(fields[3]), int(fields[19])
        )
