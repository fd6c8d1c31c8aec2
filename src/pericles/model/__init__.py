"""The vocabulary every layer shares: statuses, their transitions, specs and records.

This package imports nothing else of ours. Its modules hold one part each (`status`,
`spec`, `record`, `delivery`); every layer imports the names from here.

`spec` (the pydantic models) and `delivery` are imported on first use of one of their
names: the client and `pericles run` read records, which need no pydantic, and start
~0.1 s sooner.
"""

import importlib
from typing import TYPE_CHECKING, Any

from pericles.model.record import (
    KEPT_ONCE_STARTED,
    MAX_WAIT,
    STREAMS,
    Invocation,
    ListQuery,
    Page,
    Payload,
    Piece,
    Resolved,
    command_line,
    new_id,
    next_offset,
    record_fields,
    utcnow,
)
from pericles.model.status import (
    ALLOWED_SIGNALS,
    ERROR_PREFIX,
    OUTCOMES,
    TERMINAL,
    TRANSITIONS,
    Outcome,
    Status,
    signal_name,
    start_error,
    status_of,
)

if TYPE_CHECKING:
    from pericles.model.delivery import (
        Attempt,
        Delivery,
        DeliveryState,
    )
    from pericles.model.spec import (
        CALLBACK_EVENTS,
        CALLBACK_URL_PATTERN,
        DEFAULT_CALLBACK_EVENTS,
        DEFAULT_QUEUE,
        NAMES,
        STDIN_PIPE,
        WHOLE,
        Amount,
        Callback,
        CallbackEvent,
        CallbackUrl,
        EnvName,
        LabelName,
        Limits,
        PayloadSpec,
        QueueName,
        SafeStr,
        Seconds,
        SecretValue,
    )

_LAZY = {
    **dict.fromkeys(("Attempt", "Delivery", "DeliveryState"), "pericles.model.delivery"),
    **dict.fromkeys(
        (
            "CALLBACK_EVENTS",
            "CALLBACK_URL_PATTERN",
            "DEFAULT_CALLBACK_EVENTS",
            "DEFAULT_QUEUE",
            "NAMES",
            "STDIN_PIPE",
            "WHOLE",
            "Amount",
            "Callback",
            "CallbackEvent",
            "CallbackUrl",
            "EnvName",
            "LabelName",
            "Limits",
            "PayloadSpec",
            "QueueName",
            "SafeStr",
            "Seconds",
            "SecretValue",
        ),
        "pericles.model.spec",
    ),
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is not None:
        value = getattr(importlib.import_module(module), name)
        globals()[name] = value  # once: later lookups do not come here
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ALLOWED_SIGNALS",
    "CALLBACK_EVENTS",
    "CALLBACK_URL_PATTERN",
    "DEFAULT_CALLBACK_EVENTS",
    "DEFAULT_QUEUE",
    "ERROR_PREFIX",
    "KEPT_ONCE_STARTED",
    "MAX_WAIT",
    "NAMES",
    "OUTCOMES",
    "STDIN_PIPE",
    "STREAMS",
    "TERMINAL",
    "TRANSITIONS",
    "WHOLE",
    "Amount",
    "Attempt",
    "Callback",
    "CallbackEvent",
    "CallbackUrl",
    "Delivery",
    "DeliveryState",
    "EnvName",
    "Invocation",
    "LabelName",
    "Limits",
    "ListQuery",
    "Outcome",
    "Page",
    "Payload",
    "PayloadSpec",
    "Piece",
    "QueueName",
    "Resolved",
    "SafeStr",
    "Seconds",
    "SecretValue",
    "Status",
    "command_line",
    "new_id",
    "next_offset",
    "record_fields",
    "signal_name",
    "start_error",
    "status_of",
    "utcnow",
]
