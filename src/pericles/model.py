"""The vocabulary every layer shares: statuses, their transitions, specs and records.

This module imports nothing else of ours. The status strings are the seed's contract and
must stay byte for byte as they are.
"""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    SecretStr,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema


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


#: The `stdin` value that keeps a payload's stdin open for `POST /payloads/{id}/stdin`.
STDIN_PIPE = "pipe"

ERROR_PREFIX = "error:"

#: The queue a payload waits in when its spec names none; celery workers consume queues by name.
DEFAULT_QUEUE = "default"
QueueName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]


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


def _env_name(value: str) -> str:
    if "=" in value:
        raise ValueError("must not contain '='")
    return value


def _label_name(value: str) -> str:
    if "=" in value:
        raise ValueError("must not contain '=' (labels are filtered as label=key=value)")
    return value


def _secret(value: SecretStr) -> SecretStr:
    # The messages never quote the value: validation errors are answered to the client.
    text = value.get_secret_value()
    if not text:
        raise ValueError("must not be empty")
    if "\x00" in text:
        raise ValueError("must not contain NUL characters")
    return value


@dataclasses.dataclass(frozen=True, slots=True)
class _Documented:
    """Puts a pattern in a type's JSON schema for what its validators check in Python.

    The validators give the clearer message ("must not contain '='"); the pattern lets the
    OpenAPI document say the same, so that clients and fuzzers know what is accepted. On
    a dict (`keys=True`) it is the pattern of the names.
    """

    pattern: str
    keys: bool = False

    def __get_pydantic_json_schema__(
        self, schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        json_schema = handler(schema)
        if self.keys:
            json_schema.setdefault("propertyNames", {})["pattern"] = self.pattern
        else:
            json_schema["pattern"] = self.pattern
        return json_schema


_NO_NUL = r"^[^\x00]*$"
SafeStr = Annotated[str, AfterValidator(_no_nul), _Documented(_NO_NUL)]
#: On a dict of names: no '=' and no NUL in any of them.
NAMES = _Documented(r"^[^=\x00]*$", keys=True)
EnvName = Annotated[str, Field(min_length=1), AfterValidator(_no_nul), AfterValidator(_env_name)]
LabelName = Annotated[
    str, Field(min_length=1, max_length=128), AfterValidator(_no_nul), AfterValidator(_label_name)
]
SecretValue = Annotated[
    SecretStr, Field(min_length=1), AfterValidator(_secret), _Documented(_NO_NUL)
]


def _whole(value: object) -> object:
    # JSON has one number type: 3.0 is the integer 3 to most encoders and to JSON Schema's
    # "integer", so the strict models take an integer-valued float as that integer.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


#: Put after an int's bounds, so that they stay plain JSON Schema minimum and maximum.
WHOLE = BeforeValidator(_whole)
Seconds = Annotated[float, Field(gt=0, le=10 * 365 * 86400, allow_inf_nan=False)]
Amount = Annotated[int, Field(ge=0, le=2**62), WHOLE]


class Limits(BaseModel):
    """Resource limits set with setrlimit in the payload's process before it runs its command."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    cpu_seconds: Annotated[Amount | None, Field(description="RLIMIT_CPU: CPU seconds")] = None
    memory_bytes: Annotated[Amount | None, Field(description="RLIMIT_AS: address space, bytes")] = (
        None
    )
    max_processes: Annotated[
        Amount | None, Field(description="RLIMIT_NPROC: processes of the user (root is exempt)")
    ] = None
    max_open_files: Annotated[Amount | None, Field(description="RLIMIT_NOFILE")] = None
    max_file_size: Annotated[
        Amount | None, Field(description="RLIMIT_FSIZE: largest file written, bytes")
    ] = None

    def given(self) -> dict[str, int]:
        """The limits that were asked for, by field name."""
        return {k: v for k, v in self.model_dump().items() if v is not None}


#: What a callback may be told of: a payload starting, and each way it can end.
CALLBACK_EVENTS: tuple[str, ...] = ("started", *(s.value for s in Status if s in TERMINAL))
#: The events a callback that names none is told of: every ending.
DEFAULT_CALLBACK_EVENTS: tuple[str, ...] = tuple(e for e in CALLBACK_EVENTS if e != "started")
CallbackEvent = Literal["started", "finished", "error", "cancelled", "timeout", "lost"]
assert set(get_args(CallbackEvent)) == set(CALLBACK_EVENTS), "every event needs its spelling"


#: An absolute http(s) URL whose host is a name or an address (no user or password: sign with
#: --callback-secret instead). The pattern is the whole check, so the OpenAPI document says
#: exactly what is accepted; a URL that still cannot be sent fails its delivery at once.
CALLBACK_URL_PATTERN = (
    r"^[hH][tT][tT][pP][sS]?://([A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(:[0-9]{1,5})?"
    r"([/?#][^\x00-\x20\x7f]*)?$"
)
CallbackUrl = Annotated[str, Field(min_length=1, max_length=2048, pattern=CALLBACK_URL_PATTERN)]


class Callback(BaseModel):
    """Where to POST a payload's record when it starts or ends (`events`)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    url: Annotated[CallbackUrl, Field(description="http:// or https:// URL to POST the record to")]
    events: Annotated[
        list[CallbackEvent] | None,
        Field(
            min_length=1,
            description="started and/or terminal statuses; default: every terminal one",
        ),
    ] = None

    def as_record(self) -> dict[str, Any]:
        events = (
            DEFAULT_CALLBACK_EVENTS if self.events is None else tuple(dict.fromkeys(self.events))
        )
        return {"url": self.url, "events": list(events)}


class PayloadSpec(BaseModel):
    """What a client asks to run: the body of `POST /payloads`."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    cmd: Annotated[SafeStr, Field(min_length=1, description="Executable path or bare name")]
    params: Annotated[
        list[SafeStr], Field(default_factory=list, description="Arguments after the command")
    ]
    env: Annotated[
        Annotated[dict[EnvName, SafeStr], NAMES] | None,
        Field(description="Variables laid over a minimal clean environment (PATH only)"),
    ] = None
    cwd: Annotated[
        SafeStr | None, Field(min_length=1, description="Working directory; must exist")
    ] = None
    stdin: Annotated[
        SafeStr | None,
        Field(description='Text fed to stdin then closed, or "pipe" to write it later'),
    ] = None
    timeout: Annotated[Seconds | None, Field(description="Wall-clock seconds before a kill")] = None
    idle_timeout: Annotated[
        Seconds | None, Field(description="Seconds without output before a kill")
    ] = None
    kill_grace: Annotated[
        float | None,
        Field(ge=0, le=3600, allow_inf_nan=False, description="Seconds from SIGTERM to SIGKILL"),
    ] = None
    limits: Annotated[Limits | None, Field(description="Resource limits (setrlimit)")] = None
    labels: Annotated[
        Annotated[dict[LabelName, Annotated[SafeStr, Field(max_length=1024)]], NAMES] | None,
        Field(max_length=64, description="Free-form tags, filterable with ?label=key=value"),
    ] = None
    priority: Annotated[
        int,
        Field(ge=-(2**31), le=2**31 - 1, description="Higher starts first when queued"),
        WHOLE,
    ] = 0
    callbacks: Annotated[
        list[Callback] | None,
        Field(max_length=16, description="URLs told when it starts or ends (signed POSTs)"),
    ] = None
    keep_descendants: Annotated[
        bool,
        Field(
            description="When the main process exits, wait for the processes it started "
            "(the payload stays working) instead of killing them (the default)"
        ),
    ] = False
    queue: Annotated[
        QueueName | None,
        Field(
            description="The queue it waits in (default: default): celery workers started "
            "with --queues NAME take it"
        ),
    ] = None
    # SecretStr keeps the values out of repr() and model_dump(); Payload.from_spec never
    # copies them, so no record, log line or store ever holds one.
    secret_env: Annotated[
        Annotated[dict[EnvName, SecretValue], NAMES] | None,
        Field(
            description="Write-only variables for the process: never stored or returned, "
            "and replaced by *** in its captured output; no name may also be in env"
        ),
    ] = None

    @model_validator(mode="after")
    def _secret_names_apart(self) -> PayloadSpec:
        if self.env and self.secret_env and (both := self.env.keys() & self.secret_env.keys()):
            raise ValueError(f"secret_env and env both name {', '.join(sorted(both))}")
        return self

    def secret_values(self) -> list[str]:
        return [v.get_secret_value() for v in (self.secret_env or {}).values()]


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
        return status_of(self.status)

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


# -- callback deliveries ---------------------------------------------------------------------


class DeliveryState(StrEnum):
    #: Not sent yet, or to be tried again at `next_attempt_at`.
    PENDING = "pending"
    #: The receiver answered 2xx.
    DELIVERED = "delivered"
    #: Given up: a final answer (4xx but 429, 3xx), a refused address, or out of retries.
    FAILED = "failed"


@dataclasses.dataclass(frozen=True, slots=True)
class Attempt:
    """One try at a delivery: when, what came back (or what went wrong), how long it took."""

    at: datetime
    duration_seconds: float
    status_code: int | None = None
    error: str | None = None
    #: The start of the answer's body (at most 1 KiB, as text).
    response_excerpt: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Delivery:
    """One event of one payload for one URL, and its attempts so far.

    `body` is the record as it was at the event, sent byte for byte on every attempt.
    """

    id: str
    payload_id: str
    event: str
    url: str
    body: str
    created_at: datetime
    state: str = DeliveryState.PENDING.value
    attempts: tuple[Attempt, ...] = ()
    next_attempt_at: datetime | None = None
    #: The delivery this one sends again (`POST .../redeliver`).
    redelivery_of: str | None = None
    #: The name of the token that created the payload: its own callback key signs this.
    created_by: str | None = None

    @property
    def done(self) -> bool:
        return self.state != DeliveryState.PENDING.value
