"""Controlling a payload: cancel it, signal it, write to its stdin, forget it."""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, TypeVar

import orjson
from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.responses import Response

from pericles.api.deps import ServiceDep, SettingsDep
from pericles.api.payloads import _read_body
from pericles.api.problems import Problem
from pericles.api.render import JSONResponse
from pericles.model import Payload

router = APIRouter()

M = TypeVar("M", bound=BaseModel)


class SignalRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    signal: Annotated[str, Field(description="SIGHUP, SIGINT, SIGTERM, SIGKILL, SIGUSR1, ...")]


class StdinRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    data: Annotated[str | None, Field(description="Text to write, as UTF-8")] = None
    data_base64: Annotated[str | None, Field(description="Bytes to write, base64")] = None
    close: Annotated[bool, Field(description="Close stdin once the data is written")] = False


def _parse(model: type[M], body: bytes) -> M:
    try:
        return model.model_validate(orjson.loads(body or b"{}"))
    except orjson.JSONDecodeError as exc:
        raise Problem(400, "invalid-json", f"the body is not valid JSON: {exc}") from exc
    except ValidationError as exc:
        detail = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}"
            for e in exc.errors(include_url=False)
        )
        raise Problem(422, "invalid-request", detail) from exc


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
)
async def signal_payload(
    payload_id: str, request: Request, service: ServiceDep, settings: SettingsDep
) -> Response:
    body = _parse(SignalRequest, await _read_body(request, settings.max_body))
    return JSONResponse(await service.send_signal(payload_id, body.signal))


@router.post(
    "/payloads/{payload_id}/stdin",
    summary='Write to the stdin of a payload created with "stdin": "pipe"',
)
async def write_stdin(
    payload_id: str, request: Request, service: ServiceDep, settings: SettingsDep
) -> Response:
    body = _parse(StdinRequest, await _read_body(request, settings.max_body))
    data = (body.data or "").encode()
    if body.data_base64 is not None:
        try:
            data += base64.b64decode(body.data_base64, validate=True)
        except binascii.Error as exc:
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
