"""Exit codes of the `pericles` command, in one table.

A waited-for payload (`run --wait`, `wait`) hands on its own outcome, the way a shell does:

| outcome                                   | exit code                          |
| ----------------------------------------- | ---------------------------------- |
| `finished` with an exit code              | that exit code                     |
| `finished`, ended by signal N             | 128 + N (SIGKILL: 137, SIGTERM: 143) |
| `timeout` (wall-clock or idle)            | 124, as coreutils `timeout`        |
| `error:start(...)` (could not be started) | 127, as a shell's "command not found" |
| `cancelled`, or Ctrl-C while waiting      | 130, as a shell after Ctrl-C       |
| `lost` (its server died while it ran)     | 125, as `timeout` when it fails itself |

The payloads' codes come from `pericles.model.OUTCOMES`, one row per status.
Every ending but an exit by itself also prints one line on stderr saying what happened
(`ending`), so stdout stays the payload's own.

The command's own failures:

| failure                                          | exit code |
| ------------------------------------------------ | --------- |
| the server refused (404, 409, 422...), an ambiguous id prefix | 1 |
| bad usage (unknown option, missing argument)      | 2         |
| an option the payload model refuses (`--timeout 0`): nothing is sent | 2 |
| the server cannot be reached                      | 3         |
| the server wants a token, or another one (401)    | 4         |
"""

from __future__ import annotations

import signal
from typing import TYPE_CHECKING

from pericles.client import ClientError, ServerUnreachable, SpecNotValid, Unauthorized

if TYPE_CHECKING:
    from pericles.model import Payload, Status

# The payload model (pydantic) is imported where a record is read, not at start: `pericles
# --help` needs none of it.

OK = 0
ERROR = 1
USAGE = 2
UNREACHABLE = 3
UNAUTHORIZED = 4

SIGNALLED = 128
BROKEN_PIPE = SIGNALLED + signal.SIGPIPE


def _of(status: Status) -> int:
    from pericles.model import OUTCOMES

    code = OUTCOMES[status].exit_code
    assert code is not None, f"{status} has no exit code of its own"
    return code


def cancelled() -> int:
    """Ctrl-C while waiting ends as a cancelled payload does."""
    from pericles.model import Status

    return _of(Status.CANCELLED)


def for_record(record: Payload) -> int:
    """The exit code that stands for how a payload ended (`model.OUTCOMES`)."""
    from pericles.model import OUTCOMES

    outcome = OUTCOMES[record.state]
    if not outcome.terminal:
        raise ValueError(f"payload {record.id} has not ended: it is {record.status!r}")
    if outcome.exit_code is not None:
        return outcome.exit_code
    if record.exit_code is not None:
        return record.exit_code
    return SIGNALLED + _signal_number(record.signal)


def _signal_number(name: str | None) -> int:
    try:
        return signal.Signals[name or ""].value
    except KeyError:
        return 0


def for_error(error: ClientError) -> int:
    if isinstance(error, ServerUnreachable):
        return UNREACHABLE
    if isinstance(error, Unauthorized):
        return UNAUTHORIZED
    if isinstance(error, SpecNotValid):
        return USAGE
    return ERROR


def ending(record: Payload) -> str | None:
    """One line on how a payload ended, unless it exited by itself (its code says it)."""
    from pericles.model import Status

    state = record.state
    if state is Status.FINISHED:
        return f"{record.cmd} was killed by {record.signal}" if record.signal else None
    if state is Status.ERROR:
        reason = record.status.partition("':")[2] or record.status
        return f"{record.cmd} could not start: {reason}"
    if state is Status.TIMEOUT:
        limit = record.idle_timeout if record.timeout_reason == "idle" else record.timeout
        why = "without output for" if record.timeout_reason == "idle" else "after"
        return f"{record.cmd} timed out {why} {limit:g}s" if limit else f"{record.cmd} timed out"
    if state is Status.CANCELLED:
        return f"{record.cmd} was cancelled"
    if state is Status.LOST:
        return f"{record.cmd} was lost: its server stopped while it ran"
    return None
