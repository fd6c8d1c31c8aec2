"""Statuses, what each means, and the moves between them: the lifecycle as data.

The wire values are the seed's status strings and must stay byte for byte as they are.
"""

from __future__ import annotations

import dataclasses
from enum import StrEnum


class Status(StrEnum):
    """The state of a payload. The wire value of each is the seed's status string."""

    #: Accepted and stored, not started yet.
    PENDING = "pending"
    #: Its process is running.
    WORKING = "working"
    #: Its process exited, by itself or by a signal; `exit_code` and `signal` say how.
    FINISHED = "finished"
    #: Its process could not be started. On the wire it reads `error:start('<cmd>':<reason>`.
    ERROR = "error"
    #: Ended before it started or while it ran, because it was asked to stop.
    CANCELLED = "cancelled"
    #: Its process group is stopped (SIGSTOP); SIGCONT makes it `working` again.
    PAUSED = "paused"
    #: Killed at its wall-clock deadline or after too long without output (`timeout_reason`).
    TIMEOUT = "timeout"
    #: It was running when its server died; found so at the next start (durable stores only).
    LOST = "lost"


@dataclasses.dataclass(frozen=True, slots=True)
class Outcome:
    """What a status means to whoever reads it: final or not, the CLI's exit code, a colour."""

    terminal: bool
    #: What `pericles run --wait` and `pericles wait` exit with; None for `finished`, which
    #: hands on the process's own exit code (128+N for signal N), and for states not final.
    exit_code: int | None
    #: A Rich colour name for the status in tables.
    colour: str


#: One row per status: adding a status without its outcome fails at import.
OUTCOMES: dict[Status, Outcome] = {
    Status.PENDING: Outcome(False, None, "yellow"),
    Status.WORKING: Outcome(False, None, "cyan"),
    Status.PAUSED: Outcome(False, None, "magenta"),
    Status.FINISHED: Outcome(True, None, "green"),
    # As a shell's "command not found".
    Status.ERROR: Outcome(True, 127, "red"),
    # As a shell after Ctrl-C.
    Status.CANCELLED: Outcome(True, 130, "bright_black"),
    # As coreutils `timeout`.
    Status.TIMEOUT: Outcome(True, 124, "red"),
    # How it ended is unknown: as coreutils `timeout` or `env` when they themselves fail.
    Status.LOST: Outcome(True, 125, "red"),
}
assert OUTCOMES.keys() == set(Status), "every status needs its outcome"

TERMINAL: frozenset[Status] = frozenset(s for s, outcome in OUTCOMES.items() if outcome.terminal)

_ENDINGS = frozenset({Status.FINISHED, Status.CANCELLED, Status.TIMEOUT, Status.LOST})

#: The moves a payload may make, as data: service checks each one against this table.
TRANSITIONS: dict[Status, frozenset[Status]] = {
    # PENDING -> LOST: a server died while starting it; recovery never starts it again.
    # LOST: a worker claimed it, then stopped answering before its start was confirmed. It
    # may have started: it is never started again.
    Status.PENDING: frozenset({Status.WORKING, Status.ERROR, Status.CANCELLED, Status.LOST}),
    Status.WORKING: _ENDINGS | {Status.PAUSED},
    Status.PAUSED: _ENDINGS | {Status.WORKING},
    Status.FINISHED: frozenset(),
    Status.ERROR: frozenset(),
    Status.CANCELLED: frozenset(),
    Status.TIMEOUT: frozenset(),
    Status.LOST: frozenset(),
}

#: Signals a client may send to a running payload's process group, by name.
ALLOWED_SIGNALS = frozenset(
    {
        "SIGHUP",
        "SIGINT",
        "SIGTERM",
        "SIGKILL",
        "SIGUSR1",
        "SIGUSR2",
        "SIGSTOP",
        "SIGCONT",
        "SIGWINCH",
    }
)


def signal_name(value: str) -> str | None:
    """The allow-listed name for `value` ("USR1", "sigusr1", "SIGUSR1"); None if not allowed."""
    name = value.upper()
    name = name if name.startswith("SIG") else f"SIG{name}"
    return name if name in ALLOWED_SIGNALS else None


ERROR_PREFIX = "error:"


def start_error(cmd: str, reason: str) -> str:
    """The seed's status for a payload that could not start.

    The seed prints it without a closing parenthesis, and clients match it exactly.
    """
    return f"error:start('{cmd}':{reason}"


def status_of(wire: str) -> Status:
    """The `Status` behind a wire status string."""
    if wire.startswith(ERROR_PREFIX):
        return Status.ERROR
    return Status(wire)
