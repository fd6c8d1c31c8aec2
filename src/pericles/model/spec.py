"""What a client may ask to run: the validated body of `POST /payloads` and its parts."""

from __future__ import annotations

import dataclasses
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

from pericles.model.status import TERMINAL, Status

#: The `stdin` value that keeps a payload's stdin open for `POST /payloads/{id}/stdin`.
STDIN_PIPE = "pipe"

#: The queue a payload waits in when its spec names none; celery workers consume queues by name.
DEFAULT_QUEUE = "default"
QueueName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]


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
