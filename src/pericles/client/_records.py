"""Records from JSON, and specs to JSON, without importing pydantic when it has no work.

pydantic and the payload model's schemas cost ~0.1 s to import and build, most of what
`pericles run --wait` spent before sending anything. A record a Pericles server sends has
every field in its final JSON type already, and a spec of a command and its arguments needs
only their strings checked; those are built here directly. Anything else (a number where a
string was expected, a field this table does not know, a spec with options) goes to
pydantic as before, which coerces or refuses it with its own messages: what is accepted and
what comes out is the same either way (tests/test_client.py compares the two).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from functools import cache
from typing import TYPE_CHECKING, Any

from pericles.model import Payload

if TYPE_CHECKING:
    from pydantic import TypeAdapter

    from pericles.model import PayloadSpec

FIELDS = frozenset(f.name for f in dataclasses.fields(Payload))
_FULL_ID = re.compile(r"[0-9a-f]{32}")
# RFC 3339 as the server writes it (UTC, "Z", microseconds); other spellings go to pydantic.
_TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?(Z|[+-]\d\d:\d\d)")


def _str(value: Any) -> Any:
    return value if type(value) is str else _NO


def _int(value: Any) -> Any:
    return value if type(value) is int else _NO


def _float(value: Any) -> Any:
    # pydantic takes a JSON integer for a float as float(value), as here (exactly so up
    # to 2**53; larger ones are pydantic's to read).
    if type(value) is int and abs(value) <= 2**53:
        return float(value)
    return value if type(value) is float else _NO


def _bool(value: Any) -> Any:
    return value if type(value) is bool else _NO


def _datetime(value: Any) -> Any:
    if type(value) is not str or not _TIMESTAMP.fullmatch(value):
        return _NO
    return datetime.fromisoformat(value)


def _strings(value: Any) -> Any:
    ok = type(value) is list and all(type(v) is str for v in value)
    return list(value) if ok else _NO


def _dict_of(kind: type) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        if type(value) is not dict or not all(type(k) is str for k in value):
            return _NO
        if kind is not object and not all(type(v) is kind for v in value.values()):
            return _NO
        return dict(value)

    return check


def _objects(value: Any) -> Any:
    ok = type(value) is list and all(type(v) is dict for v in value)
    return [dict(v) for v in value] if ok else _NO


_NO = object()
"""What a reader returns for a value it leaves to pydantic."""

# Each field of `Payload`: how to read it, and whether null is allowed. A field missing
# here sends the whole record to pydantic (tests/test_client.py checks the table is whole).
KINDS: dict[str, tuple[Callable[[Any], Any], bool]] = {
    "status": (_str, False),
    "cmd": (_str, False),
    "params": (_strings, False),
    "id": (_str, False),
    "exit_code": (_int, True),
    "signal": (_str, True),
    "pid": (_int, True),
    "created_at": (_datetime, True),
    "started_at": (_datetime, True),
    "finished_at": (_datetime, True),
    "stdout_bytes": (_int, False),
    "stderr_bytes": (_int, False),
    "stdout_dropped": (_int, False),
    "stderr_dropped": (_int, False),
    "timeout_reason": (_str, True),
    "queue_position": (_int, True),
    "pending_reason": (_str, True),
    "cpu_user_seconds": (_float, True),
    "cpu_system_seconds": (_float, True),
    "max_rss_bytes": (_int, True),
    "duration_seconds": (_float, True),
    "env": (_dict_of(str), True),
    "cwd": (_str, True),
    "stdin": (_str, True),
    "timeout": (_float, True),
    "idle_timeout": (_float, True),
    "kill_grace": (_float, True),
    "limits": (_dict_of(int), True),
    "labels": (_dict_of(str), True),
    "priority": (_int, False),
    "keep_descendants": (_bool, True),
    "stop_reason": (_str, True),
    "exe": (_str, True),
    "exe_sha256": (_str, True),
    "created_by": (_str, True),
    "secret_env_names": (_strings, True),
    "callbacks": (_objects, True),
    "action": (_str, True),
    "args": (_dict_of(object), True),
    "lock": (_str, True),
    "queue": (_str, True),
    "worker": (_str, True),
}
_REQUIRED = ("status", "cmd", "params", "id")


@cache
def _adapter() -> TypeAdapter[Payload]:
    from pydantic import TypeAdapter

    return TypeAdapter(Payload)


def direct(data: Mapping[str, Any]) -> Payload | None:
    """The record built without pydantic, or None when pydantic must read it."""
    if not all(name in data for name in _REQUIRED):
        return None
    values: dict[str, Any] = {}
    for name, value in data.items():
        kind = KINDS.get(name)
        if kind is None:
            if name in FIELDS:
                return None  # a field this table does not know yet
            continue  # a newer server's field: ignored, as pydantic's way ignores it
        read, nullable = kind
        if value is None:
            if not nullable:
                return None
            values[name] = None
            continue
        value = read(value)
        if value is _NO:
            return None
        values[name] = value
    if not _FULL_ID.fullmatch(values["id"]):
        return None
    return Payload(**values)


def payload(data: Any) -> Payload:
    """A record from its JSON, ignoring fields this client does not know (a newer server)."""
    if not isinstance(data, Mapping):
        raise TypeError(f"a payload record must be a JSON object, not {type(data).__name__}")
    return direct(data) or _adapter().validate_python(
        {k: v for k, v in data.items() if k in FIELDS}
    )


@cache
def _objects_adapter() -> TypeAdapter[list[dict[str, Any]]]:
    from pydantic import TypeAdapter

    return TypeAdapter(list[dict[str, Any]])


def objects(data: Any) -> list[dict[str, Any]]:
    """A JSON list of objects (a page of records), as pydantic's `list[dict[str, Any]]`."""
    ok = type(data) is list and all(type(item) is dict for item in data)
    return data if ok else _objects_adapter().validate_python(data)


def plain_body(
    spec: object, params: Sequence[object], fields: Mapping[str, Any]
) -> dict[str, Any] | None:
    """The body of `POST /payloads` for a command and its arguments, checked as the model
    checks them (strings, the command not empty, no NUL); None when the model must."""
    if fields or type(spec) is not str or not spec or "\x00" in spec:
        return None
    args = list(params)
    if not all(type(arg) is str and "\x00" not in arg for arg in args):
        return None
    return {"cmd": spec, "params": args}


def spec_body(spec: PayloadSpec) -> dict[str, Any]:
    """The body of `POST /payloads` for a validated spec: what differs from the defaults."""
    body = spec.model_dump(mode="json", exclude_defaults=True)
    body["params"] = spec.params  # the seed's two fields, always
    return body
