"""The seed's endpoints: create, list and show payloads."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Query, Request
from pydantic import ValidationError
from starlette.responses import Response

from pericles.api.deps import ServiceDep, SettingsDep
from pericles.api.problems import Problem
from pericles.api.render import JSONResponse
from pericles.model import Payload, PayloadSpec

router = APIRouter()

_SEED_REQUEST = {"cmd": "/bin/sleep", "params": ["30"]}
_SEED_RECORD = {
    "status": "pending",
    "cmd": "/bin/sleep",
    "params": ["30"],
    "id": "0d111286d6fb4f7ebd7464082bada101",
}
_SPEC_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "Parsed as JSON whatever the Content-Type says.",
        "content": {
            "application/json": {
                "schema": PayloadSpec.model_json_schema(),
                "example": _SEED_REQUEST,
            }
        },
    }
}


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise Problem(413, "body-too-large", f"the body is over {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise Problem(413, "body-too-large", f"the body is over {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _parse_spec(body: bytes) -> PayloadSpec:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise Problem(400, "invalid-json", f"the body is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise Problem(422, "invalid-spec", "the body must be a JSON object")
    try:
        return PayloadSpec.model_validate(data)
    except ValidationError as exc:
        errors = [
            {"loc": ".".join(str(part) for part in e["loc"]), "msg": e["msg"]}
            for e in exc.errors(include_url=False)
        ]
        detail = "; ".join(f"{e['loc'] or 'body'}: {e['msg']}" for e in errors)
        raise Problem(422, "invalid-spec", detail, errors=errors) from exc


@router.post(
    "/payloads",
    status_code=201,
    response_model=Payload,
    summary="Start a process",
    openapi_extra=_SPEC_BODY,
    responses={201: {"content": {"application/json": {"example": _SEED_RECORD}}}},
)
async def create_payload(request: Request, service: ServiceDep, settings: SettingsDep) -> Response:
    spec = _parse_spec(await _read_body(request, settings.max_body))
    record = await service.create(spec)
    return JSONResponse(record, status_code=201, headers={"Location": f"/payloads/{record.id}"})


@router.get("/payloads", response_model=list[Payload], summary="Every payload, oldest first")
async def list_payloads(service: ServiceDep) -> Response:
    return JSONResponse(await service.list())


MAX_WAIT = 300.0


@router.get("/payloads/{payload_id}", response_model=Payload, summary="One payload")
async def get_payload(
    payload_id: str,
    service: ServiceDep,
    wait: Annotated[
        float | None,
        Query(
            gt=0,
            le=MAX_WAIT,
            description="Answer as soon as the payload has ended, or after this many seconds",
        ),
    ] = None,
) -> Response:
    if wait is None:
        return JSONResponse(await service.get(payload_id))
    return JSONResponse(await service.wait(payload_id, wait))
