"""The vocabulary every layer shares: statuses, their transitions, specs and records.

This module imports nothing else of ours. The status strings are the seed's contract and
must stay byte for byte as they are.
"""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field


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


TERMINAL: frozenset[Status] = frozenset({Status.FINISHED, Status.ERROR, Status.CANCELLED})

#: The moves a payload may make, as data: service checks each one against this table.
TRANSITIONS: dict[Status, frozenset[Status]] = {
    Status.PENDING: frozenset({Status.WORKING, Status.ERROR, Status.CANCELLED}),
    Status.WORKING: frozenset({Status.FINISHED}),
    Status.FINISHED: frozenset(),
    Status.ERROR: frozenset(),
    Status.CANCELLED: frozenset(),
}

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


def new_id() -> str:
    """A payload id: a uuid4 as 32 lowercase hex digits, as in the seed."""
    return uuid.uuid4().hex


def utcnow() -> datetime:
    return datetime.now(UTC)


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


SafeStr = Annotated[str, AfterValidator(_no_nul)]


class PayloadSpec(BaseModel):
    """What a client asks to run: the body of `POST /payloads`."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    cmd: Annotated[SafeStr, Field(min_length=1, description="Executable path or bare name")]
    params: Annotated[
        list[SafeStr], Field(default_factory=list, description="Arguments after the command")
    ]


@dataclasses.dataclass(frozen=True, slots=True)
class Payload:
    """One payload's record, as stored and as rendered.

    Field order is the wire order: the seed's four fields first. Records are immutable;
    a transition makes a new one, so a record handed to a reader never changes under it.
    """

    status: str
    cmd: str
    params: list[str]
    id: str
    exit_code: int | None = None
    signal: str | None = None
    pid: int | None = None
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    stdout_bytes: int = 0
    stderr_bytes: int = 0
    stdout_dropped: int = 0
    stderr_dropped: int = 0

    @property
    def state(self) -> Status:
        return status_of(self.status)

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL


def check_transition(record: Payload, wanted: Status) -> None:
    """Raise unless `record` may move to `wanted`; the error names both states."""
    from pericles.errors import AlreadyTerminal, InvalidTransition

    current = record.state
    if wanted in TRANSITIONS[current]:
        return
    error = AlreadyTerminal if current in TERMINAL else InvalidTransition
    raise error(record.id, record.status, wanted.value)
