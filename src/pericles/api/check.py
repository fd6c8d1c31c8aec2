"""`POST /payloads/check`: what the command policy would say of a create body."""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel
from starlette.responses import Response

from pericles.api.deps import ServiceDep, SettingsDep

# The create body is parsed exactly as create parses it: one parser, so check never drifts.
from pericles.api.payloads import _SPEC_BODY, _parse_spec, _read_body
from pericles.api.render import JSONResponse

router = APIRouter()


class CheckAnswer(BaseModel):
    allowed: bool
    rule: str | None
    reason: str
    exe: str | None
    exe_sha256: str | None


@router.post(
    "/payloads/check",
    response_model=CheckAnswer,
    summary="Would this payload be allowed? Starts and stores nothing",
    openapi_extra=_SPEC_BODY,
)
async def check_payload(request: Request, service: ServiceDep, settings: SettingsDep) -> Response:
    spec = _parse_spec(await _read_body(request, settings.max_body))
    decision = await service.check(spec)
    answer = CheckAnswer(
        allowed=decision.allowed,
        rule=decision.rule,
        reason=decision.reason,
        exe=decision.exe,
        exe_sha256=decision.exe_sha256,
    )
    return JSONResponse(answer.model_dump())
