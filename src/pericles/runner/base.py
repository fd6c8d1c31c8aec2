"""The runner interface: start a spec, then report what its process does as events."""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import AsyncIterator

from pericles.errors import FieldError
from pericles.model import PayloadSpec, Resolved


class StartFailed(Exception):
    """The process could not be started; `reason` is the OS's text, e.g. 'No such file...'."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclasses.dataclass(frozen=True, slots=True)
class Output:
    stream: str
    data: bytes


@dataclasses.dataclass(frozen=True, slots=True)
class Exited:
    exit_code: int | None
    signal: str | None
    #: From the child's rusage, covering the descendants it waited for.
    cpu_user_seconds: float | None = None
    cpu_system_seconds: float | None = None
    max_rss_bytes: int | None = None


Event = Output | Exited


def check_target(judged: Resolved, now: Resolved) -> None:
    """Raise `StartFailed` unless `now`, the file and cwd opened to start a payload, are
    `judged`: the same path, digest and directory. The one check between admission and
    exec; every runner makes it on the files it then starts from."""
    if judged.judged:
        what, refused = "admitted", "refused by the command policy: "
    else:
        what, refused = "resolved", "changed as it started: "
    if (now.exe, now.sha256) != (judged.exe, judged.sha256):
        raise StartFailed(
            f"{refused}{now.exe} (sha256 {now.sha256}) is not the file {what}, "
            f"{judged.exe} (sha256 {judged.sha256})"
        )
    if now.cwd != judged.cwd:
        raise StartFailed(f"{refused}cwd {now.cwd} is not the one {what}, {judged.cwd}")


class Execution(abc.ABC):
    """One started process. Its `events()` yield output in order and end with one `Exited`."""

    pid: int | None

    @abc.abstractmethod
    def events(self) -> AsyncIterator[Event]: ...

    @abc.abstractmethod
    async def terminate(self, grace: float) -> None:
        """Stop the process and all it started: SIGTERM, `grace` seconds, then SIGKILL."""

    @abc.abstractmethod
    def send_signal(self, name: str) -> bool:
        """Send the signal named `name` (e.g. "SIGUSR1") to the process group.

        False when the process has ended already.
        """

    @abc.abstractmethod
    def write_stdin(self, data: bytes, close: bool = False) -> None:
        """Queue `data` for the process's stdin, then close it if `close`.

        Raises `StdinUnavailable` when stdin is not an open pipe, `ServiceUnavailable` (with a
        retry delay) when too much is queued already.
        """


class Runner(abc.ABC):
    def check(self, spec: PayloadSpec) -> list[FieldError]:
        """What in the spec this runner cannot give (a `cwd` that does not exist here)."""
        return []

    @abc.abstractmethod
    async def identify(self, spec: PayloadSpec) -> Resolved:
        """The file the spec's command runs and its SHA-256; `StartFailed` when none would."""

    @abc.abstractmethod
    async def start(
        self, payload_id: str, spec: PayloadSpec, resolved: Resolved | None = None
    ) -> Execution:
        """Start the spec's process; `StartFailed` when it cannot.

        With `resolved`, only that file in that cwd: the runner opens them and checks what
        it opened (`check_target`) before it starts from the open files."""

    async def ping(self) -> None:
        """Raise unless the runner can start payloads now."""
        return None

    def host_boot(self) -> str | None:
        """An id of the boot the processes run in, or None when not known."""
        return None

    def kill_leftovers(self, payload_id: str, pid: int | None, started_after: float) -> int:
        """Kill what remains of a payload an earlier server started: its cgroup where there
        is one, else its process group `pid` (only processes started at or after
        `started_after`, a Unix time); how many processes."""
        return 0

    def containment(self) -> str:
        """How the processes a payload starts are kept together, in a few words."""
        return "none"

    async def open(self) -> None:
        """Get ready to start payloads."""
        return None

    async def close(self) -> None:
        """Release what the runner holds, once every payload has ended."""
        return None
