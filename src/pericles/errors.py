"""The exceptions Pericles raises, one tree for every layer.

    PericlesError
     +-- PayloadNotFound      no payload has that id
     +-- InvalidSpec          the request asks for something that cannot be run
     |    +-- InvalidArgs     a named action's arguments are not valid (names each one)
     +-- ActionNotFound       no action has that name
     |    +-- InvalidSignal   a signal not on the allow-list
     +-- PolicyDenied         the command policy refuses the request (names the rule, why)
     +-- InvalidTransition    a payload cannot move from its state to the one asked
     |    +-- AlreadyTerminal the payload has ended and never changes again
     +-- NotRunning           the payload has no running process to act on (pending, paused...)
     +-- StillActive          the payload is pending or running (e.g. deleting without force)
     +-- StdinUnavailable     the payload's stdin is not an open pipe
     +-- ServiceUnavailable   the service is not taking work now (shutting down, full)
          +-- StoreUnavailable the store cannot be opened, read or written

Each layer turns foreign errors into these (`raise ... from exc`); `api.problems` alone maps
them to HTTP.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence


class PericlesError(Exception):
    """Base of every error Pericles raises on purpose."""


class PayloadNotFound(PericlesError):
    def __init__(self, payload_id: str) -> None:
        super().__init__(f"no payload has the id {payload_id!r}")
        self.payload_id = payload_id


class DeliveryNotFound(PericlesError):
    def __init__(self, payload_id: str, delivery_id: str) -> None:
        super().__init__(f"payload {payload_id!r} has no callback delivery {delivery_id!r}")
        self.payload_id = payload_id
        self.delivery_id = delivery_id


@dataclasses.dataclass(frozen=True, slots=True)
class FieldError:
    """What is wrong with one field of a request: `loc` is its dotted path ("params.1")."""

    loc: str
    msg: str


class InvalidSpec(PericlesError):
    """The request is well-formed but names something that cannot be run.

    `errors` name the fields at fault, when known; the message then lists them.
    """

    def __init__(self, message: str | None = None, errors: Sequence[FieldError] = ()) -> None:
        self.errors = tuple(errors)
        super().__init__(message or "; ".join(f"{e.loc or 'body'}: {e.msg}" for e in errors))


class InvalidArgs(InvalidSpec):
    """A named action's arguments are not valid; `errors` name each one (`args.NAME`)."""


class ActionNotFound(PericlesError):
    def __init__(self, name: str) -> None:
        super().__init__(f"no action is named {name!r}")
        self.name = name


class InvalidSignal(InvalidSpec):
    """A signal a client may not send (not in `model.ALLOWED_SIGNALS`)."""


class PolicyDenied(PericlesError):
    """The command policy refuses a spec; `rule` is the rule that refused it, if one matched."""

    def __init__(self, rule: str | None, reason: str) -> None:
        by = f"rule {rule!r}" if rule is not None else "the command policy"
        super().__init__(f"refused by {by}: {reason}")
        self.rule = rule
        self.reason = reason


class InvalidTransition(PericlesError):
    def __init__(self, payload_id: str, current: str, wanted: str) -> None:
        super().__init__(f"payload {payload_id} is {current!r} and cannot become {wanted!r}")
        self.payload_id = payload_id
        self.current = current
        self.wanted = wanted


class AlreadyTerminal(InvalidTransition):
    pass


class StaleRecord(InvalidTransition):
    """The record changed since it was read (another process moved it first): nothing written."""


class NotRunning(PericlesError):
    def __init__(self, payload_id: str, current: str, action: str) -> None:
        super().__init__(f"payload {payload_id} is {current!r}: cannot {action}")
        self.payload_id = payload_id
        self.current = current


class StillActive(PericlesError):
    def __init__(self, payload_id: str, current: str) -> None:
        super().__init__(
            f"payload {payload_id} is {current!r}: cancel it first, or delete with force=true"
        )
        self.payload_id = payload_id
        self.current = current


class StdinUnavailable(PericlesError):
    """Writing to a payload whose stdin was not asked as "pipe", or is closed already."""


class ServiceUnavailable(PericlesError):
    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class StoreUnavailable(ServiceUnavailable):
    """The store cannot be used: a bad URL, a database that cannot be opened or written.

    Answered 503 with `Retry-After`: a full disk or a locked file may clear by itself.
    """

    def __init__(self, reason: str, retry_after: float | None = 5.0) -> None:
        super().__init__(reason, retry_after)


class SecretsKeyError(Exception):
    """A `--secrets-key-file` that cannot be used, or secrets it cannot open."""
