"""The only code that touches OS processes: spawn, drain, signal, reap.

Nothing above this package calls `os.kill`, `os.posix_spawn` or `subprocess`.
"""

from pericles.process.child import Child, Exit, OutputSink
from pericles.process.contain import Containment
from pericles.process.exe import (
    HOST_PATHS,
    DigestCache,
    HostPaths,
    MagicLink,
    Target,
    canonical,
    identify,
    open_target,
)
from pericles.process.identity import RunAs, UnknownIdentity, is_root, parse_run_as
from pericles.process.limits import RLIMITS
from pericles.process.orphans import boot_id, kill_group
from pericles.process.reaper import become_subreaper, kill_strays
from pericles.process.spawn import (
    DEFAULT_PATH,
    Launch,
    Launched,
    SpawnFailed,
    Stdio,
    check_cwd,
    prepare,
    resolve_executable,
    spawn,
    watch,
)
from pericles.process.spawner import Spawner
from pericles.process.stdin import StdinClosed, StdinFull, StdinWriter

__all__ = [
    "DEFAULT_PATH",
    "HOST_PATHS",
    "RLIMITS",
    "Child",
    "Containment",
    "DigestCache",
    "Exit",
    "HostPaths",
    "Launch",
    "Launched",
    "MagicLink",
    "OutputSink",
    "RunAs",
    "SpawnFailed",
    "Spawner",
    "StdinClosed",
    "StdinFull",
    "StdinWriter",
    "Stdio",
    "Target",
    "UnknownIdentity",
    "become_subreaper",
    "boot_id",
    "canonical",
    "check_cwd",
    "identify",
    "is_root",
    "kill_group",
    "kill_strays",
    "open_target",
    "parse_run_as",
    "prepare",
    "resolve_executable",
    "spawn",
    "watch",
]
