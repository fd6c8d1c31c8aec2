"""The only code that touches OS processes: spawn, drain, signal, reap.

Nothing above this package calls `os.kill`, `os.posix_spawn` or `subprocess`.
"""

from pericles.process.child import Child, Exit, OutputSink
from pericles.process.reaper import become_subreaper, kill_strays
from pericles.process.spawn import DEFAULT_PATH, SpawnFailed, resolve_executable, spawn

__all__ = [
    "DEFAULT_PATH",
    "Child",
    "Exit",
    "OutputSink",
    "SpawnFailed",
    "become_subreaper",
    "kill_strays",
    "resolve_executable",
    "spawn",
]
