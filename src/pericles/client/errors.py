"""What the client raises: one tree under `ClientError`, itself a `PericlesError`.

    PericlesError
     +-- ClientError               anything the client raises on purpose
          +-- ServerUnreachable    no answer: connection refused, timed out, dropped
          +-- AmbiguousId          an id prefix matches several payloads (`candidates`)
          +-- SpecNotValid         the spec breaks the payload model: nothing was sent
                                   (also an `InvalidSpec`, with `errors`)
          +-- ProblemError         the server answered an error (`status`, `problem`, `detail`)
               +-- Unauthorized    401: no token, or a wrong one
               +-- NotFound        404 (also a `PayloadNotFound`)
               +-- Conflict        409; by the problem's type also one of `AlreadyTerminal`,
               |                   `InvalidTransition`, `NotRunning`, `StillActive`,
               |                   `StdinUnavailable`
               +-- InvalidRequest  400, 413, 422 (also an `InvalidSpec`)
               +-- Unavailable     503 (also a `ServiceUnavailable`, with `retry_after`)

So code written against the server's errors (`except PayloadNotFound`) works against the
client's too. Only `payload_id` is filled on those classes; their other attributes
(`current`, `wanted`) are not in the problem JSON.
"""

from __future__ import annotations

from typing import Any

from pericles import errors


class ClientError(errors.PericlesError):
    """Base of every error the client raises on purpose."""


class ServerUnreachable(ClientError):
    """The server gave no answer: nothing listens there, or the connection broke or timed out."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"cannot reach the server at {url}: {reason}")
        self.url = url
        self.reason = reason


class AmbiguousId(ClientError):
    def __init__(self, prefix: str, candidates: list[str]) -> None:
        listed = ", ".join(candidates)
        super().__init__(f"the id prefix {prefix!r} matches {len(candidates)} payloads: {listed}")
        self.prefix = prefix
        self.candidates = candidates


class SpecNotValid(ClientError, errors.InvalidSpec):
    """A spec the payload model refuses, found before sending it: the server would too.

    The client validates with the server's own model (`pericles.model.PayloadSpec`), so
    its bounds (a timeout over 0, ...) are the server's.
    """


class ProblemError(ClientError):
    """The server answered an error; `problem` is its RFC 9457 body (or one made up for it)."""

    def __init__(self, status: int, problem: dict[str, Any], payload_id: str = "") -> None:
        self.detail = str(problem.get("detail") or problem.get("title") or f"HTTP {status}")
        # Not super().__init__: the server-side classes mixed in below take other arguments.
        Exception.__init__(self, self.detail)
        self.status = status
        self.problem = problem
        self.payload_id = payload_id

    @property
    def type(self) -> str:
        return str(problem_type) if (problem_type := self.problem.get("type")) else "about:blank"


class Unauthorized(ProblemError):
    pass


class NotFound(ProblemError, errors.PayloadNotFound):
    pass


class Conflict(ProblemError):
    pass


class AlreadyTerminal(Conflict, errors.AlreadyTerminal):
    pass


class InvalidTransition(Conflict, errors.InvalidTransition):
    pass


class NotRunning(Conflict, errors.NotRunning):
    pass


class StillActive(Conflict, errors.StillActive):
    pass


class StdinUnavailable(Conflict, errors.StdinUnavailable):
    pass


class InvalidRequest(ProblemError, errors.InvalidSpec):
    pass


class Unavailable(ProblemError, errors.ServiceUnavailable):
    def __init__(self, status: int, problem: dict[str, Any], payload_id: str = "") -> None:
        super().__init__(status, problem, payload_id)
        self.retry_after: float | None = None


# The server's problem types (api/problems.py) that name a more precise class than the status.
BY_TYPE: dict[str, type[ProblemError]] = {
    "/problems/already-terminal": AlreadyTerminal,
    "/problems/invalid-transition": InvalidTransition,
    "/problems/not-running": NotRunning,
    "/problems/still-active": StillActive,
    "/problems/stdin-unavailable": StdinUnavailable,
}

BY_STATUS: dict[int, type[ProblemError]] = {
    400: InvalidRequest,
    401: Unauthorized,
    404: NotFound,
    409: Conflict,
    413: InvalidRequest,
    422: InvalidRequest,
    503: Unavailable,
}


def problem_error(status: int, problem: dict[str, Any], payload_id: str = "") -> ProblemError:
    """The most precise exception for an error answer."""
    cls = BY_TYPE.get(str(problem.get("type", ""))) or BY_STATUS.get(status, ProblemError)
    return cls(status, problem, payload_id)
