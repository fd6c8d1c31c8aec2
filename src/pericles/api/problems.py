"""Errors as RFC 9457 problem JSON: every error the API answers is mapped here, and only here."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any, cast

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic_core import ErrorDetails
from starlette.exceptions import HTTPException
from starlette.responses import Response

from pericles import validation
from pericles.api.methods import allowed_methods
from pericles.errors import (
    ActionNotFound,
    AlreadyTerminal,
    DeliveryNotFound,
    InvalidArgs,
    InvalidSignal,
    InvalidSpec,
    InvalidTransition,
    NotRunning,
    PayloadNotFound,
    PericlesError,
    PolicyDenied,
    ServiceUnavailable,
    StdinUnavailable,
    StillActive,
)

log = logging.getLogger("pericles.api")

PROBLEM_MEDIA_TYPE = "application/problem+json"


class ProblemBody(BaseModel):
    """An RFC 9457 problem: every error this API answers has this shape."""

    model_config = ConfigDict(extra="allow")

    type: str = "about:blank"
    title: str
    status: int
    detail: str


def problem_doc(description: str) -> dict[str, Any]:
    """An OpenAPI response entry for a problem answer."""
    return {
        "description": description,
        "content": {PROBLEM_MEDIA_TYPE: {"schema": ProblemBody.model_json_schema()}},
    }


#: The errors any payload route may answer, for the OpenAPI document.
PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: problem_doc("The request is malformed (bad JSON, a bad event id)"),
    403: problem_doc("The command policy refuses it; `rule` and `reason` say which rule and why"),
    404: problem_doc("No such payload"),
    409: problem_doc("The payload's state does not allow this"),
    413: problem_doc("The body is too large"),
    422: problem_doc("The request is well-formed but invalid; `errors` lists what"),
    503: problem_doc("Not taking payloads now (shutting down, queue full); see Retry-After"),
}


class Problem(Exception):
    """An error to answer as problem JSON, raised by the API layer itself."""

    def __init__(
        self,
        status: int,
        slug: str,
        detail: str,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.slug = slug
        self.detail = detail
        self.headers = headers
        self.extra = extra


def problem_response(
    status: int,
    detail: str,
    slug: str | None = None,
    headers: Mapping[str, str] | None = None,
    **extra: Any,
) -> Response:
    body: dict[str, Any] = {
        "type": f"/problems/{slug}" if slug else "about:blank",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        **extra,
    }
    return Response(
        orjson.dumps(body, option=orjson.OPT_APPEND_NEWLINE),
        status_code=status,
        media_type=PROBLEM_MEDIA_TYPE,
        headers=headers,
    )


# Most specific class first: the first match wins.
_ERROR_STATUS: list[tuple[type[PericlesError], int, str]] = [
    (PayloadNotFound, 404, "payload-not-found"),
    (DeliveryNotFound, 404, "delivery-not-found"),
    (ActionNotFound, 404, "action-not-found"),
    (AlreadyTerminal, 409, "already-terminal"),
    (InvalidTransition, 409, "invalid-transition"),
    (NotRunning, 409, "not-running"),
    (StillActive, 409, "still-active"),
    (StdinUnavailable, 409, "stdin-unavailable"),
    (InvalidArgs, 422, "invalid-args"),
    (InvalidSignal, 422, "invalid-signal"),
    (InvalidSpec, 422, "invalid-spec"),
    (PolicyDenied, 403, "policy-denied"),
    (ServiceUnavailable, 503, "unavailable"),
]


def _from_pericles_error(exc: PericlesError) -> Response:
    for cls, status, slug in _ERROR_STATUS:
        if isinstance(exc, cls):
            headers = None
            if isinstance(exc, ServiceUnavailable) and exc.retry_after is not None:
                headers = {"Retry-After": str(max(1, round(exc.retry_after)))}
            extra: dict[str, Any] = {}
            if isinstance(exc, PolicyDenied):
                extra = {"rule": exc.rule, "reason": exc.reason}
            elif isinstance(exc, InvalidSpec) and exc.errors:
                extra = {"errors": [{"loc": e.loc, "msg": e.msg} for e in exc.errors]}
            return problem_response(status, str(exc), slug, headers, **extra)
    log.error("unmapped error: %r", exc)
    return problem_response(500, "internal error", "internal")


async def _on_problem(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, Problem)
    return problem_response(exc.status, exc.detail, exc.slug, exc.headers, **exc.extra)


async def _on_pericles_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, PericlesError)
    return _from_pericles_error(exc)


async def _on_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    detail = exc.detail
    if exc.status_code == 404 and detail == "Not Found":
        detail = f"no resource at {request.url.path}"
    headers = exc.headers
    if exc.status_code == 405:
        allowed = allowed_methods(request.app.router.routes, request.scope)
        headers = {**(headers or {}), "Allow": ", ".join(allowed)}
        detail = f"{request.method} is not allowed on {request.url.path}; use {', '.join(allowed)}"
    return problem_response(exc.status_code, detail, headers=headers)


def validation_errors(exc: ValidationError) -> list[dict[str, str]]:
    """A body's validation errors as `{"loc", "msg"}` pairs in the user's words."""
    return [
        {"loc": validation.location(e["loc"]), "msg": validation.words(e)}
        for e in exc.errors(include_url=False)
    ]


def _parameter_error(error: Mapping[str, Any]) -> dict[str, str]:
    where, *name = error.get("loc", ("request",))
    text = validation.words(cast(ErrorDetails, error))
    if error.get("type") != "missing":
        text += f", got {validation.shown(error.get('input'))}"
    kind = "header" if where == "header" else f"{where} parameter"
    return {"loc": f"{kind} {validation.location(tuple(name))}".strip(), "msg": text}


async def _on_validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = [_parameter_error(e) for e in exc.errors()]
    detail = "; ".join(f"{e['loc']}: {e['msg']}" for e in errors)
    return problem_response(422, detail, "invalid-request", errors=errors)


async def _on_unexpected(request: Request, exc: Exception) -> Response:
    # Starlette re-raises after this answer, so the server still logs the traceback.
    return problem_response(500, "the server failed to handle this request", "internal")


def install(app: FastAPI) -> None:
    """Make every error the app can answer a problem JSON body."""
    app.add_exception_handler(Exception, _on_unexpected)
    app.add_exception_handler(Problem, _on_problem)
    app.add_exception_handler(PericlesError, _on_pericles_error)
    app.add_exception_handler(HTTPException, _on_http_exception)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
