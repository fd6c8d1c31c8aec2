"""The ASGI app: routes, error mapping, and the service's life inside the app's lifespan."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.responses import Response

from pericles import __version__
from pericles.api import control, events, output, payloads, problems
from pericles.api.render import JSONResponse
from pericles.runner.local import LocalRunner
from pericles.service import Service
from pericles.settings import Settings
from pericles.store import open_store

log = logging.getLogger("pericles.api")


def create_app(settings: Settings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        store = open_store("memory://", settings.max_output)
        runner = LocalRunner(settings.inherit_env, settings.max_stdin)
        await runner.open()
        service = Service(settings, store, runner)
        app.state.service = service
        try:
            yield
        finally:
            await service.shutdown(settings.shutdown_grace)
            await runner.close()
            await store.close()

    app = FastAPI(
        title="Pericles",
        version=__version__,
        summary="Run and watch processes over HTTP",
        lifespan=lifespan,
    )
    app.state.settings = settings
    problems.install(app)
    app.include_router(payloads.router)
    app.include_router(output.router)
    app.include_router(events.router)
    app.include_router(control.router)

    @app.get("/healthz", summary="The server is up", tags=["operations"])
    async def healthz() -> Response:
        return JSONResponse({"status": "ok"})

    return app
