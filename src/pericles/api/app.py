"""The ASGI app: routes, error mapping, and the service's life inside the app's lifespan."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from pericles import __version__
from pericles.api import control, events, operations, output, payloads, problems
from pericles.api.telemetry import RequestMetrics
from pericles.metrics import Metrics
from pericles.runner.local import LocalRunner
from pericles.service import Service
from pericles.settings import Settings
from pericles.store import open_store

log = logging.getLogger("pericles.api")


def create_app(settings: Settings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        store = open_store(settings.store, settings.max_output)
        await store.open()
        runner = LocalRunner(settings.inherit_env, settings.max_stdin)
        await runner.open()
        service = Service(settings, store, runner, metrics)
        await service.recover()
        metrics.track_counts(lambda: service.running_count, lambda: service.pending_count)
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
    metrics = Metrics()
    app.state.settings = settings
    app.state.metrics = metrics
    problems.install(app)
    for router in (payloads.router, output.router, events.router, control.router):
        app.include_router(router, responses=problems.PROBLEM_RESPONSES)
    app.include_router(operations.router)
    if settings.metrics:
        app.include_router(operations.metrics_router)
    app.add_middleware(RequestMetrics, metrics=metrics)
    return app
