"""The only code that touches OS processes: spawn, drain, signal, reap.

Nothing above this package calls `os.kill`, `os.posix_spawn` or `subprocess`.
"""

from pericles.process.child import Child, Exit, OutputSink
from pericles.process.limits import RLIMITS
from pericles.process.orphans import boot_id, kill_group
from pericles.process.reaper import become_subreaper, kill_strays
from pericles.process.spawn import (
    DEFAULT_PATH,
    SpawnFailed,
    Stdio,
    check_cwd,
    resolve_executable,
    spawn,
)
from pericles.process.stdin import StdinClosed, StdinFull, StdinWriter

__all__ = [
    "DEFAULT_PATH",
    "RLIMITS",
    "Child",
    "Exit",
    "OutputSink",
    "SpawnFailed",
    "StdinClosed",
    "StdinFull",
    "StdinWriter",
    "Stdio",
    "become_subreaper",
    "boot_id",
    "check_cwd",
    "kill_group",
    "kill_strays",
    "resolve_executable",
    "spawn",
]
