"""What operators and their tools ask: is it up, is it ready, what are the numbers."""

from __future__ import annotations

from fastapi import APIRouter, Request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.responses import Response

from pericles.api.deps import ServiceDep
from pericles.api.problems import problem_response
from pericles.api.render import JSONResponse
from pericles.metrics import Metrics

router = APIRouter(tags=["operations"])


@router.get("/healthz", summary="The server process is alive")
async def healthz() -> Response:
    return JSONResponse({"status": "ok"})


@router.get(
    "/readyz",
    summary="The store and the runner are usable: payloads can be taken",
    responses={503: {"description": "Not ready; `detail` says why"}},
)
async def readyz(service: ServiceDep) -> Response:
    reason = await service.unready_reason()
    if reason is not None:
        return problem_response(503, reason, "not-ready")
    return JSONResponse({"status": "ready", "containment": service.containment})


metrics_router = APIRouter(tags=["operations"])


@metrics_router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
)
async def metrics(request: Request) -> Response:
    registry: Metrics = request.app.state.metrics
    return Response(generate_latest(registry.registry), media_type=CONTENT_TYPE_LATEST)
