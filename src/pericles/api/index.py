"""`GET /`: where to go from here, as a small JSON index of links.

One route on its own, so that a dashboard can take `/` over by replacing this router.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from pericles import __version__
from pericles.api.render import JSONResponse

router = APIRouter(tags=["operations"])


@router.get("/", summary="Links to the API's parts")
async def index(request: Request) -> Response:
    links = {
        "payloads": "/payloads",
        "events": "/events",
        "docs": "/docs",
        "openapi": "/openapi.json",
        "health": "/healthz",
        "ready": "/readyz",
    }
    if request.app.state.settings.metrics:
        links["metrics"] = "/metrics"
    return JSONResponse({"name": "pericles", "version": __version__, "links": links})
