"""Named actions over HTTP: list them, run one with arguments, or trigger one by a webhook.

A run renders the action into an ordinary payload spec and creates it through the service
as `POST /payloads` does (caps, policy, queue): the answer is the payload's record, and
everything after (output, events, cancel) is the payload API.
"""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Header, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.responses import Response

from pericles.actions import Action, Catalog
from pericles.actions.hooks import DELIVERY_HEADERS, SIGNATURE_HEADER, hook_args, signed
from pericles.actions.source import ActionSource
from pericles.api.auth import CallerDep, TokenDep, for_limited_tokens
from pericles.api.deps import ServiceDep, SettingsDep
from pericles.api.payloads import _invalid, _read_body
from pericles.api.problems import Problem
from pericles.api.render import JSONResponse
from pericles.errors import ActionNotFound
from pericles.model import Payload
from pericles.tokens import Token

router = APIRouter()
#: Not behind the token guard: a delivery's signature is its credential.
hook_router = APIRouter()


class ActionInfo(BaseModel):
    """What a client needs to offer an action: a form, a CLI command, a button."""

    name: str
    title: str
    description: str | None
    cmd: str
    params: Annotated[list[str], Field(description="argv after cmd, with {arg} placeholders")]
    args_schema: Annotated[dict[str, Any], Field(description="JSON Schema of the args object")]
    lock: Annotated[str | None, Field(description="Runs holding this lock do not overlap")]
    concurrency: Annotated[int | None, Field(description="Runs under the lock at once")]
    hook: Annotated[bool, Field(description="POST /actions/{name}/hook takes signed deliveries")]
    timeout: float | None
    labels: dict[str, str] | None


class RunRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    args: Annotated[
        dict[str, Any], Field(description="The action's arguments; see its args_schema")
    ] = {}


_RUN_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "Parsed as JSON whatever the Content-Type says.",
        "content": {"application/json": {"schema": RunRequest.model_json_schema()}},
    }
}


def _run_request(body: bytes) -> RunRequest:
    try:
        data = orjson.loads(body or b"{}")
    except orjson.JSONDecodeError as exc:
        raise Problem(400, "invalid-json", f"the body is not valid JSON: {exc}") from exc
    try:
        return RunRequest.model_validate(data)
    except ValidationError as exc:
        raise _invalid(
            [
                {"loc": ".".join(str(p) for p in e["loc"]) or "body", "msg": e["msg"]}
                for e in exc.errors(include_url=False, include_input=False)
            ]
        ) from None


def _info(action: Action) -> ActionInfo:
    return ActionInfo(
        name=action.name,
        title=action.title,
        description=action.description,
        cmd=action.cmd,
        params=list(action.template_text),
        args_schema=action.schema(),
        lock=action.lock,
        concurrency=action.lock_limit if action.lock is not None else None,
        hook=action.hook is not None,
        timeout=action.fixed.get("timeout"),
        labels=action.fixed.get("labels"),
    )


def _catalog(request: Request) -> Catalog:
    source: ActionSource = request.app.state.actions
    return source.catalog


def _action(request: Request, name: str, token: Token | None) -> Action:
    """The action `name`, as far as this caller may know it exists."""
    if token is not None and token.actions is not None and name not in token.actions:
        raise ActionNotFound(name)
    return _catalog(request).get(name)


async def _create(
    service: ServiceDep,
    action: Action,
    args: Any,
    idempotency_key: str | None,
    created_by: str | None,
) -> Response:
    spec, invocation = action.invoke(args)
    record = await service.create(spec, idempotency_key, created_by, invocation)
    if record.action != action.name:
        # The key named another request's payload: never hand that one to this caller.
        raise Problem(
            409, "idempotency-key-reused", "the Idempotency-Key was used for another request"
        )
    return JSONResponse(record, status_code=201, headers={"Location": f"/payloads/{record.id}"})


@router.get("/actions", response_model=list[ActionInfo], summary="The named actions")
@for_limited_tokens
async def list_actions(request: Request, token: TokenDep) -> Response:
    shown = [a for a in _catalog(request) if token is None or token.sees(a.name)]
    return JSONResponse([_info(a).model_dump() for a in shown])


@router.get("/actions/{name}", response_model=ActionInfo, summary="One named action")
@for_limited_tokens
async def get_action(request: Request, name: str, token: TokenDep) -> Response:
    return JSONResponse(_info(_action(request, name, token)).model_dump())


@router.post(
    "/actions/{name}/run",
    status_code=201,
    response_model=Payload,
    summary="Run a named action with arguments; answers the payload it created",
    openapi_extra=_RUN_BODY,
)
@for_limited_tokens
async def run_action(
    request: Request,
    name: str,
    service: ServiceDep,
    settings: SettingsDep,
    token: TokenDep,
    created_by: CallerDep,
    idempotency_key: Annotated[
        str | None,
        Header(max_length=255, description="As on POST /payloads: a repeat returns the first"),
    ] = None,
) -> Response:
    action = _action(request, name, token)
    body = _run_request(await _read_body(request, settings.max_body))
    return await _create(service, action, body.args, idempotency_key, created_by)


@hook_router.post(
    "/actions/{name}/hook",
    status_code=201,
    response_model=Payload,
    summary="Run a named action from a signed webhook delivery (X-Hub-Signature-256)",
)
async def hook_action(
    request: Request, name: str, service: ServiceDep, settings: SettingsDep
) -> Response:
    try:
        action = _catalog(request).get(name)
    except ActionNotFound:
        action = None
    if action is None or action.hook is None:
        raise Problem(404, "hook-not-found", f"no action named {name!r} takes webhook deliveries")
    body = await _read_body(request, settings.max_body)
    signature = request.headers.get(SIGNATURE_HEADER)
    if not signed(action.hook.secret, body, signature):
        detail = f"{SIGNATURE_HEADER} is missing or does not sign this body with the hook secret"
        raise Problem(403, "invalid-signature", detail)
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise Problem(400, "invalid-json", f"the body is not valid JSON: {exc}") from exc
    keys = [f"{name} signature {signature}"]
    keys += [
        f"{name} delivery {value}"
        for header in DELIVERY_HEADERS
        if (value := request.headers.get(header))
    ]
    deliveries = request.app.state.deliveries
    if not deliveries.note(keys, action.hook.replay_window):
        raise Problem(409, "replayed-delivery", "this delivery was received already; ignored")
    try:
        return await _create(service, action, hook_args(action.hook.pointers, data), None, None)
    except BaseException:
        deliveries.forget(keys)  # not acted on: the sender may try again
        raise
