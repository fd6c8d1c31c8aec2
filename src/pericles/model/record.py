"""A payload's record, its output pieces, and the queries that list records."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

from pericles.model.status import TERMINAL, Status, status_of

if TYPE_CHECKING:
    from pydantic import Field

    from pericles.model.spec import PayloadSpec
else:

    def Field(**kwargs: Any) -> Any:
        """pydantic's `Field`, called only when pydantic reads `Payload`'s annotations.

        They are strings (`from __future__ import annotations`), evaluated by pydantic when
        it builds a schema (the API's response models, the OpenAPI document): importing
        this module, as the client and `pericles run` do, then costs no pydantic.
        """
        from pydantic import Field as field

        return field(**kwargs)


#: Wire text to status, for every status but `error:...` (see `status_of`).
_BY_WIRE: dict[str, Status] = {status.value: status for status in Status}

#: The streams a payload writes, in the order they are shown.
STREAMS = ("stdout", "stderr")

#: The longest a request may wait for a payload to end (`GET /payloads/{id}?wait=`), seconds.
MAX_WAIT = 300.0


@dataclasses.dataclass(frozen=True, slots=True)
class Piece:
    """Bytes of one stream, at `offset` in that stream and `coff` in the combined output."""

    stream: str
    offset: int
    coff: int
    data: bytes

    @property
    def end(self) -> int:
        """Where a reader of this stream resumes after this piece."""
        return next_offset(self.offset, len(self.data))


def next_offset(offset: int, size: int, dropped: int = 0) -> int:
    """Where a reader resumes after `size` bytes read from `offset`, `dropped` before them."""
    return offset + dropped + size


@dataclasses.dataclass(frozen=True, slots=True)
class Resolved:
    """A command as it will run: the absolute executable and its digest, and the real cwd.

    `judged` says a policy allowed this very file (argv[0] is then `exe`, never the caller's
    spelling); `pinned` that the allowing rule pinned its sha256 (the open file is executed).
    """

    exe: str
    #: Hex SHA-256 of the executable; None when the server cannot read it (exec-only file).
    sha256: str | None
    cwd: str | None = None
    judged: bool = False
    pinned: bool = False


def new_id() -> str:
    """A payload id: a uuid4 as 32 lowercase hex digits, as in the seed."""
    return uuid.uuid4().hex


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclasses.dataclass(frozen=True, slots=True)
class Invocation:
    """What a named action adds to the spec it rendered: who it was, and how it may run.

    The service admits the spec as any other; these say what the record shows and which
    lock the run must hold.
    """

    action: str
    #: The arguments as validated, secrets left out: what the record shows.
    args: dict[str, Any]
    #: Runs sharing a lock name run at most `lock_limit` at a time; the rest wait pending.
    lock: str | None = None
    lock_limit: int = 1
    #: Environment names the action itself declares (its `env` and secret arguments): the
    #: caller chose none of them, so a policy's environment allow-list accepts them.
    declared_env: frozenset[str] = frozenset()


@dataclasses.dataclass(frozen=True, slots=True)
class Payload:
    """One payload's record, as stored and as rendered.

    Field order is the wire order: the seed's four fields first. Records are immutable;
    a transition makes a new one, so a record handed to a reader never changes under it.
    """

    status: Annotated[
        str,
        Field(
            description="pending, working, paused, finished, timeout, cancelled, lost, or "
            "error:start('<cmd>':<reason> (exactly so, with no closing parenthesis) when the "
            "command could not be started",
            examples=["finished", "error:start('/sbin/ping':No such file or directory"],
        ),
    ]
    cmd: Annotated[str, Field(description="The command as asked")]
    params: Annotated[list[str], Field(description="Its arguments")]
    id: Annotated[
        str, Field(description="uuid4 as 32 lowercase hex digits", pattern="^[0-9a-f]{32}$")
    ]
    exit_code: Annotated[
        int | None, Field(description="Exit status once ended; null when a signal ended it")
    ] = None
    signal: Annotated[
        str | None, Field(description='The signal that ended the process, e.g. "SIGKILL"')
    ] = None
    pid: Annotated[
        int | None, Field(description="Process id, also its process group and session id")
    ] = None
    created_at: Annotated[datetime | None, Field(description="Accepted (RFC 3339, UTC)")] = None
    started_at: Annotated[datetime | None, Field(description="Its process started")] = None
    finished_at: Annotated[datetime | None, Field(description="It ended")] = None
    stdout_bytes: Annotated[int, Field(description="Bytes written to stdout so far")] = 0
    stderr_bytes: Annotated[int, Field(description="Bytes written to stderr so far")] = 0
    stdout_dropped: Annotated[
        int, Field(description="stdout bytes not kept: the middle of an output over --max-output")
    ] = 0
    stderr_dropped: Annotated[int, Field(description="stderr bytes not kept")] = 0
    timeout_reason: str | None = None
    queue_position: int | None = None
    pending_reason: str | None = None
    cpu_user_seconds: float | None = None
    cpu_system_seconds: float | None = None
    max_rss_bytes: int | None = None
    duration_seconds: float | None = None
    # The spec's optional fields, echoed; shared with the frozen spec, never copied.
    env: dict[str, str] | None = None
    cwd: str | None = None
    stdin: str | None = None
    timeout: float | None = None
    idle_timeout: float | None = None
    kill_grace: float | None = None
    limits: dict[str, int] | None = None
    labels: dict[str, str] | None = None
    priority: int = 0
    keep_descendants: Annotated[
        bool | None, Field(description="true when its processes outlive its main one")
    ] = None
    stop_reason: Annotated[
        str | None,
        Field(
            description="Why the server stopped it: cancel, timeout, delete, shutdown, or "
            "signal (a signal sent through the API ended it); null when it ended by itself"
        ),
    ] = None
    exe: Annotated[
        str | None, Field(description="The file run: absolute, `..` and symlinks resolved")
    ] = None
    exe_sha256: Annotated[
        str | None, Field(description="SHA-256 of `exe` when it started (hex)")
    ] = None
    created_by: Annotated[
        str | None, Field(description="Name of the token that created it; null without auth")
    ] = None
    secret_env_names: Annotated[
        list[str] | None,
        Field(description="Names of its secret_env variables; their values are never kept"),
    ] = None
    callbacks: Annotated[
        list[dict[str, Any]] | None,
        Field(description="Its callbacks: url and the events each is told of"),
    ] = None
    action: Annotated[
        str | None, Field(description="The named action that created it (POST /actions/...)")
    ] = None
    args: Annotated[
        dict[str, Any] | None,
        Field(description="The action's arguments as validated; secret ones are left out"),
    ] = None
    lock: Annotated[
        str | None,
        Field(description="The action's lock: it waits pending while another run holds it"),
    ] = None
    queue: Annotated[str | None, Field(description="The queue it waits or waited in")] = None
    worker: Annotated[
        str | None, Field(description="The worker that runs or ran it (host/pid), celery only")
    ] = None

    @property
    def state(self) -> Status:
        # A dict lookup first: read dozens of times per payload, and `Status(wire)` walks
        # the enum machinery each time.
        return _BY_WIRE.get(self.status) or status_of(self.status)

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL

    @classmethod
    def from_spec(
        cls,
        spec: PayloadSpec,
        payload_id: str,
        created_at: datetime,
        created_by: str | None = None,
        invocation: Invocation | None = None,
    ) -> Payload:
        """A new pending record echoing `spec`, and the action that made it, if one did."""
        return cls(
            status=Status.PENDING.value,
            cmd=spec.cmd,
            params=spec.params,
            id=payload_id,
            created_at=created_at,
            env=spec.env,
            cwd=spec.cwd,
            stdin=spec.stdin,
            timeout=spec.timeout,
            idle_timeout=spec.idle_timeout,
            kill_grace=spec.kill_grace,
            limits=spec.limits.given() if spec.limits is not None else None,
            labels=spec.labels,
            priority=spec.priority,
            keep_descendants=spec.keep_descendants or None,
            created_by=created_by,
            secret_env_names=sorted(spec.secret_env) if spec.secret_env else None,
            callbacks=[c.as_record() for c in spec.callbacks] if spec.callbacks else None,
            action=invocation.action if invocation is not None else None,
            args=invocation.args if invocation is not None else None,
            lock=invocation.lock if invocation is not None else None,
            queue=spec.queue,
        )


@dataclasses.dataclass(frozen=True, slots=True)
class ListQuery:
    """Which records a list asks for. The defaults ask for every record, oldest first."""

    #: Keep records in any of these states; empty keeps all. ERROR matches every `error:...`.
    statuses: frozenset[Status] = frozenset()
    #: Keep records that carry every one of these (key, value) labels.
    labels: tuple[tuple[str, str], ...] = ()
    #: At most this many records; None for no limit.
    limit: int | None = None
    #: Start after the record with this id (cursor pagination).
    after: str | None = None
    descending: bool = False
    #: Keep records made by one of these named actions; None keeps all (raw ones too).
    actions: frozenset[str] | None = None
    #: Keep records whose command line (cmd and params, space-joined) holds this text,
    #: compared case-insensitively. Empty keeps all.
    text: str = ""

    def matches(self, record: Payload) -> bool:
        if self.statuses and record.state not in self.statuses:
            return False
        if self.actions is not None and record.action not in self.actions:
            return False
        if self.text and self.text.casefold() not in command_line(record).casefold():
            return False
        if self.labels:
            labels = record.labels or {}
            return all(labels.get(key) == value for key, value in self.labels)
        return True


def command_line(record: Payload) -> str:
    return " ".join([record.cmd, *record.params])


@dataclasses.dataclass(frozen=True, slots=True)
class Page:
    records: list[Payload]
    #: True when records past this page match too: ask again with `after` the last id.
    more: bool


#: Fields a started payload's record keeps even while null, so that "how did it end" is
#: read the same way from every started record: `exit_code` null with `signal` set means
#: a signal ended it, both null means it has not ended yet.
KEPT_ONCE_STARTED = frozenset({"exit_code", "signal", "pid"})


def record_fields(record: Payload) -> dict[str, Any]:
    """The record as the API shows it: in field order, leaving out what is null.

    A pending record then reads like the seed's plus what is known, instead of listing two
    dozen nulls; the OpenAPI document marks every field but the seed's four optional.
    """
    started = record.started_at is not None
    fields = {}
    for name in _FIELD_NAMES:
        value = getattr(record, name)
        if value is not None or (started and name in KEPT_ONCE_STARTED):
            fields[name] = value
    return fields


_FIELD_NAMES = tuple(field.name for field in dataclasses.fields(Payload))
