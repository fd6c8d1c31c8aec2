"""The seed's endpoints: create, list and show payloads."""

from __future__ import annotations

import logging
from typing import Annotated, Any, Literal
from urllib.parse import urlencode

import orjson
from fastapi import APIRouter, Header, Query, Request
from pydantic import BaseModel, ValidationError
from starlette.requests import ClientDisconnect
from starlette.responses import Response

from pericles.api.auth import CallerDep, TokenDep, for_limited_tokens
from pericles.api.deps import ServiceDep, SettingsDep
from pericles.api.problems import Problem, validation_errors
from pericles.api.render import JSONResponse, RenderCache
from pericles.model import MAX_WAIT, ListQuery, Payload, PayloadSpec, Status
from pericles.service import Service

log = logging.getLogger("pericles.api")

router = APIRouter()

_SEED_REQUEST = {"cmd": "/bin/sleep", "params": ["30"]}
_SEED_RECORD = {
    "status": "pending",
    "cmd": "/bin/sleep",
    "params": ["30"],
    "id": "0d111286d6fb4f7ebd7464082bada101",
}


def _inline_refs(schema: dict[str, Any]) -> dict[str, Any]:
    """`schema` with its `$defs` put in place of the refs to them.

    A JSON schema pasted into an OpenAPI document keeps refs like `#/$defs/Limits`, which
    the document resolves from its own root, where there is no `$defs`: tools then see no
    body schema at all. The spec's models are not recursive, so inlining is finite.
    """
    defs = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return resolve(defs[ref.removeprefix("#/$defs/")])
            return {key: resolve(value) for key, value in node.items()}
        if isinstance(node, list):
            return [resolve(item) for item in node]
        return node

    resolved: dict[str, Any] = resolve(schema)
    return resolved


_SPEC_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "Parsed as JSON whatever the Content-Type says.",
        "content": {
            "application/json": {
                "schema": _inline_refs(PayloadSpec.model_json_schema()),
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
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise Problem(413, "body-too-large", f"the body is over {limit} bytes")
            chunks.append(chunk)
    except ClientDisconnect:
        # Not a server fault: one line, no traceback. The answer below reaches nobody.
        client = request.client
        log.info(
            "%s %s: the client went away after %d bytes of the body (%s)",
            request.method,
            request.url.path,
            size,
            f"{client.host}:{client.port}" if client else "unknown client",
        )
        raise Problem(400, "body-incomplete", "the body ended early") from None
    return b"".join(chunks)


def _invalid(errors: list[dict[str, str]]) -> Problem:
    detail = "; ".join(f"{e['loc'] or 'body'}: {e['msg']}" for e in errors)
    return Problem(422, "invalid-spec", detail, errors=errors)


def _parse_spec(body: bytes) -> PayloadSpec:
    """The spec a body asks for, as the model reads it; what the server allows is the
    service's to say (`service.admission`)."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise Problem(400, "invalid-json", f"the body is not valid JSON: {exc}") from exc
    return spec_from(data)


def spec_from(data: object) -> PayloadSpec:
    """The spec a decoded create body asks for, as the model reads it; raises `Problem` (422).

    Every way in to create a payload (this route, `/payloads/check`, the MCP tools) parses
    through here; what the server then allows is `service.admission`'s to say.
    """
    if not isinstance(data, dict):
        raise Problem(422, "invalid-spec", "the body must be a JSON object")
    try:
        spec = PayloadSpec.model_validate(data)
    except ValidationError as exc:
        raise _invalid(validation_errors(exc)) from exc
    return spec


@router.post(
    "/payloads",
    status_code=201,
    response_model=Payload,
    summary="Start a process",
    openapi_extra=_SPEC_BODY,
    responses={201: {"content": {"application/json": {"example": _SEED_RECORD}}}},
)
async def create_payload(
    request: Request,
    service: ServiceDep,
    settings: SettingsDep,
    created_by: CallerDep,
    idempotency_key: Annotated[
        str | None,
        Header(
            max_length=255,
            description="A repeated create with the same key within 24 h returns the first "
            "payload instead of starting another",
        ),
    ] = None,
    wait: Annotated[
        float | None,
        Query(
            gt=0,
            le=MAX_WAIT,
            description="Answer (still 201) as soon as the payload has ended, or after this "
            "many seconds with the record as it then is: create and long-poll in one request",
        ),
    ] = None,
) -> Response:
    spec = _parse_spec(await _read_body(request, settings.max_body))
    return await created(service, spec, idempotency_key, created_by, wait)


async def created(
    service: Service,
    spec: PayloadSpec,
    idempotency_key: str | None,
    created_by: str | None,
    wait: float | None,
) -> Response:
    """Create's answer: 201 with the record, once ended or `wait` passed when asked to wait."""
    record = await service.create(spec, idempotency_key, created_by)
    if wait is not None:
        record = await service.wait(record.id, wait)
    return JSONResponse(record, status_code=201, headers={"Location": f"/payloads/{record.id}"})


def _statuses(values: list[str]) -> frozenset[Status]:
    try:
        return frozenset(Status(value) for value in values)
    except ValueError as exc:
        known = ", ".join(s.value for s in Status)
        raise Problem(422, "invalid-query", f"status: {exc}; known: {known}") from exc


def _labels(values: list[str]) -> tuple[tuple[str, str], ...]:
    pairs = []
    for value in values:
        key, sep, wanted = value.partition("=")
        if not sep or not key:
            raise Problem(422, "invalid-query", f"label: {value!r} is not key=value")
        pairs.append((key, wanted))
    return tuple(pairs)


@router.get(
    "/payloads",
    response_model=list[Payload],
    summary="Payloads, oldest first; every one unless filtered or paged",
)
@for_limited_tokens
async def list_payloads(
    request: Request,
    service: ServiceDep,
    token: TokenDep,
    status: Annotated[
        list[str],
        Query(
            description="Repeatable; `error` matches every error:...",
            json_schema_extra={"items": {"type": "string", "enum": [s.value for s in Status]}},
        ),
    ] = [],  # noqa: B006 - FastAPI copies query defaults
    label: Annotated[
        list[str],
        Query(
            description="Repeatable key=value",
            json_schema_extra={"items": {"type": "string", "pattern": "^[^=]+="}},
        ),
    ] = [],  # noqa: B006
    limit: Annotated[int | None, Query(ge=1, le=100_000)] = None,
    after: Annotated[str | None, Query(description="Start after this payload id")] = None,
    order: Literal["asc", "desc"] = "asc",
    q: Annotated[
        str,
        Query(
            max_length=1024,
            description="Only payloads whose command line (cmd and params, space-joined) "
            "contains this text, ignoring case",
        ),
    ] = "",
) -> Response:
    query = ListQuery(
        statuses=_statuses(status),
        labels=_labels(label),
        limit=limit,
        after=after,
        descending=order == "desc",
        actions=token.actions if token is not None else None,
        text=q,
    )
    return await listed(request, service, query)


async def listed(request: Request, service: Service, query: ListQuery) -> Response:
    """List's answer: the page of records, with a `Link` to the next page when there is one."""
    page = await service.page(query)
    headers = {}
    if page.more and page.records:
        params = [(k, v) for k, v in request.query_params.multi_items() if k != "after"]
        params.append(("after", page.records[-1].id))
        headers["Link"] = f'<{request.url.path}?{urlencode(params)}>; rel="next"'
    return JSONResponse(page.records, headers=headers)


class Counts(BaseModel):
    """How many payloads are in each status, and in all."""

    total: int
    by_status: dict[str, int]


@router.get(
    "/payloads/counts",
    response_model=Counts,
    summary="How many payloads there are, by status (`error` counts every error:...)",
)
async def count_payloads(service: ServiceDep) -> Response:
    counts = await service.counts()
    by_status = {status.value: n for status, n in counts.items()}
    return JSONResponse({"total": sum(counts.values()), "by_status": by_status})


@router.get("/payloads/{payload_id}", response_model=Payload, summary="One payload")
async def get_payload(
    request: Request,
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
    record = await (service.get(payload_id) if wait is None else service.wait(payload_id, wait))
    cache: RenderCache = request.app.state.rendered
    return Response(cache.render(record.id, record), media_type="application/json")
