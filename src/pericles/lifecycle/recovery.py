"""What a server finds in a durable store at start: helpers for `Service.recover`.

The rules themselves (pending ones queue again, running ones are lost) live in the service.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from pydantic import ValidationError

from pericles.errors import InvalidSpec
from pericles.model import Payload, PayloadSpec

_SPEC_FIELDS = (
    "cmd",
    "params",
    "env",
    "cwd",
    "stdin",
    "timeout",
    "idle_timeout",
    "kill_grace",
    "limits",
    "labels",
    "priority",
    "queue",
)


def spec_of(record: Payload) -> PayloadSpec:
    """The spec a pending record was created from (records echo their spec, caps applied).

    Raises `InvalidSpec` when it is no longer valid (a record written by another version).
    """
    fields = {name: getattr(record, name) for name in _SPEC_FIELDS}
    try:
        return PayloadSpec.model_validate({k: v for k, v in fields.items() if v is not None})
    except ValidationError as exc:
        raise InvalidSpec(f"payload {record.id}: its stored spec is not valid: {exc}") from exc


def by_end(records: Iterable[Payload], now: datetime) -> list[tuple[str, float]]:
    """Ended records as (id, seconds since it ended), those that ended first first."""
    ended = [(r.id, (now - (r.finished_at or now)).total_seconds()) for r in records if r.terminal]
    ended.sort(key=lambda item: -item[1])
    return ended
