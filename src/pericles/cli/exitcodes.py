"""Exit codes of the `pericles` command, in one table.

A waited-for payload (`run --wait`, `wait`) hands on its own outcome, the way a shell does:

| outcome                                   | exit code                          |
| ----------------------------------------- | ---------------------------------- |
| `finished` with an exit code              | that exit code                     |
| `finished`, ended by signal N             | 128 + N (SIGKILL: 137, SIGTERM: 143) |
| `timeout` (wall-clock or idle)            | 124, as coreutils `timeout`        |
| `error:start(...)` (could not be started) | 127, as a shell's "command not found" |
| `cancelled`, or Ctrl-C while waiting      | 130, as a shell after Ctrl-C       |

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

from pericles.client import ClientError, ServerUnreachable, SpecNotValid, Unauthorized
from pericles.model import Payload, Status

OK = 0
ERROR = 1
USAGE = 2
UNREACHABLE = 3
UNAUTHORIZED = 4

SIGNALLED = 128
TIMEOUT = 124
START_ERROR = 127
CANCELLED = 130
BROKEN_PIPE = SIGNALLED + signal.SIGPIPE


def for_record(record: Payload) -> int:
    """The exit code that stands for how a payload ended (see the table above)."""
    state = record.state
    if state is Status.FINISHED:
        if record.exit_code is not None:
            return record.exit_code
        return SIGNALLED + _signal_number(record.signal)
    if state is Status.TIMEOUT:
        return TIMEOUT
    if state is Status.ERROR:
        return START_ERROR
    if state is Status.CANCELLED:
        return CANCELLED
    raise ValueError(f"payload {record.id} has not ended: it is {record.status!r}")


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
