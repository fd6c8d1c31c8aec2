"""Controlling a payload: cancel it, signal it, write to its stdin, forget it."""

from __future__ import annotations

import base64
from typing import Annotated, Any, TypeVar

import orjson
from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.responses import Response

from pericles.api.deps import ServiceDep, SettingsDep
from pericles.api.payloads import _read_body
from pericles.api.problems import Problem, validation_errors
from pericles.api.render import JSONResponse
from pericles.model import ALLOWED_SIGNALS, Payload

router = APIRouter()

M = TypeVar("M", bound=BaseModel)


def _any_case(word: str) -> str:
    return "".join(f"[{c.upper()}{c.lower()}]" for c in word)


# What `signal_name` accepts, for the document: a name of ALLOWED_SIGNALS in any case, with
# or without its SIG prefix (JSON Schema patterns have no case-insensitive flag).
_SIGNAL_PATTERN = (
    f"^({_any_case('SIG')})?"
    f"({'|'.join(_any_case(name.removeprefix('SIG')) for name in sorted(ALLOWED_SIGNALS))})$"
)


class SignalRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    signal: Annotated[
        str,
        Field(
            description=f"One of {', '.join(sorted(ALLOWED_SIGNALS))}; any case, SIG optional",
            json_schema_extra={"pattern": _SIGNAL_PATTERN},
        ),
    ]


_BASE64: dict[str, Any] = {
    "pattern": "^([A-Za-z0-9+/]{4})*([A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$",
    "contentEncoding": "base64",
}


class StdinRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    data: Annotated[str | None, Field(description="Text to write, as UTF-8")] = None
    data_base64: Annotated[
        str | None, Field(description="Bytes to write, base64", json_schema_extra=_BASE64)
    ] = None
    close: Annotated[bool, Field(description="Close stdin once the data is written")] = False


def _body_doc(model: type[BaseModel], required: bool) -> dict[str, Any]:
    """The OpenAPI request body for a route that reads and checks its body itself."""
    schema = {"schema": model.model_json_schema()}
    return {"requestBody": {"required": required, "content": {"application/json": schema}}}


def _parse(model: type[M], body: bytes) -> M:
    try:
        return model.model_validate(orjson.loads(body or b"{}"))
    except orjson.JSONDecodeError as exc:
        raise Problem(400, "invalid-json", f"the body is not valid JSON: {exc}") from exc
    except ValidationError as exc:
        errors = validation_errors(exc)
        detail = "; ".join(f"{e['loc'] or 'body'}: {e['msg']}" for e in errors)
        raise Problem(422, "invalid-request", detail, errors=errors) from exc


@router.post(
    "/payloads/{payload_id}/cancel",
    response_model=Payload,
    summary="Cancel: a pending payload never starts, a running one is stopped (TERM, grace, KILL)",
)
async def cancel_payload(payload_id: str, service: ServiceDep) -> Response:
    return JSONResponse(await service.cancel(payload_id))


@router.post(
    "/payloads/{payload_id}/signal",
    response_model=Payload,
    summary="Send a signal to the payload's process group; SIGSTOP pauses, SIGCONT resumes",
    openapi_extra=_body_doc(SignalRequest, required=True),
)
async def signal_payload(
    payload_id: str, request: Request, service: ServiceDep, settings: SettingsDep
) -> Response:
    body = _parse(SignalRequest, await _read_body(request, settings.max_body))
    return JSONResponse(await service.send_signal(payload_id, body.signal))


@router.post(
    "/payloads/{payload_id}/stdin",
    summary='Write to the stdin of a payload created with "stdin": "pipe"',
    openapi_extra=_body_doc(StdinRequest, required=False),
)
async def write_stdin(
    payload_id: str, request: Request, service: ServiceDep, settings: SettingsDep
) -> Response:
    body = _parse(StdinRequest, await _read_body(request, settings.max_body))
    data = (body.data or "").encode()
    if body.data_base64 is not None:
        try:
            data += base64.b64decode(body.data_base64, validate=True)
        except ValueError as exc:  # binascii.Error, or text that is not even ASCII
            raise Problem(422, "invalid-request", f"data_base64: {exc}") from exc
    await service.write_stdin(payload_id, data, body.close)
    return JSONResponse({"written": len(data), "closed": body.close})


@router.delete(
    "/payloads/{payload_id}",
    status_code=204,
    summary="Forget an ended payload and its output; force=true cancels an active one first",
)
async def delete_payload(
    payload_id: str,
    service: ServiceDep,
    force: Annotated[bool, Query(description="Cancel an active payload first")] = False,
) -> Response:
    await service.delete(payload_id, force)
    return Response(status_code=204)
