"""The ASGI app: routes, error mapping, and the service's life inside the app's lifespan."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI
from fastapi.params import Depends as DependsParam
from starlette.middleware.cors import CORSMiddleware

from pericles import __version__, process
from pericles import policy as command_policy
from pericles.api import check, control, events, operations, output, payloads, problems
from pericles.api.auth import AUTH_RESPONSES, authorize
from pericles.api.render import RenderCache
from pericles.api.telemetry import RequestMetrics
from pericles.metrics import Metrics
from pericles.posture import log_posture
from pericles.runner.local import LocalRunner
from pericles.service import Service
from pericles.settings import Settings
from pericles.store import open_store
from pericles.tokens import TokenSet, load_tokens

log = logging.getLogger("pericles.api")


#: Headers a browser page on an allowed origin may send, and read back.
_CORS_HEADERS = ["Authorization", "Content-Type", "Idempotency-Key", "Last-Event-ID"]
_CORS_EXPOSED = [
    "Location",
    "Link",
    "Retry-After",
    "Pericles-Output-Next-Offset",
    "Pericles-Output-Dropped",
]


def create_app(settings: Settings, tokens: TokenSet | None = None) -> FastAPI:
    """The app for `settings`; `tokens` defaults to those the settings name.

    Raises `TokenConfigError`, `PolicyError` or `UnknownIdentity` for bad settings.
    """
    policy = command_policy.load(settings.allow, settings.policy)
    run_as = process.parse_run_as(settings.run_as) if settings.run_as else None
    if tokens is None:
        secret = settings.token.get_secret_value() if settings.token is not None else None
        tokens = load_tokens(secret, settings.tokens_file)
    # Imported only when asked for: without --mcp the SDK is not loaded and /mcp is a 404.
    mcp_running: Callable[[], AbstractAsyncContextManager[None]] | None = None
    if settings.mcp:
        from pericles.mcp.endpoint import mcp_route

        route, mcp_running = mcp_route(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        store = open_store(settings.store, settings.max_output)
        await store.open()
        runner = LocalRunner(settings.inherit_env, settings.max_stdin, run_as)
        await runner.open()
        service = Service(settings, store, runner, metrics, policy)
        log_posture(policy, run_as)
        await service.recover()
        metrics.track_counts(lambda: service.running_count, lambda: service.pending_count)
        app.state.service = service
        try:
            # The MCP tasks end before the service shuts down: they wait on it.
            async with AsyncExitStack() as serving:
                if mcp_running is not None:
                    await serving.enter_async_context(mcp_running())
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
    app.state.rendered = RenderCache()
    app.state.tokens = tokens
    problems.install(app)
    # Without tokens nothing is checked, and the OpenAPI document says so by naming no
    # security scheme. /healthz and /readyz stay open either way, for load balancers.
    guard: list[DependsParam] = [Depends(authorize)] if tokens else []
    denied: dict[int | str, dict[str, Any]] = AUTH_RESPONSES if tokens else {}
    # check before payloads: its path must not be taken for a payload id by a later route.
    routers = (check.router, payloads.router, output.router, events.router, control.router)
    for router in routers:
        app.include_router(
            router, dependencies=guard, responses={**problems.PROBLEM_RESPONSES, **denied}
        )
    app.include_router(operations.router)
    if settings.mcp:
        # Authenticated by the endpoint itself: MCP needs `read` to connect, `run` per tool.
        app.router.routes.append(route)
    if settings.metrics:
        app.include_router(operations.metrics_router, dependencies=guard, responses=denied)
    app.add_middleware(RequestMetrics, metrics=metrics)
    if settings.cors_origin:
        # Outermost, so preflights are answered before authentication: they carry no token.
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origin,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=_CORS_HEADERS,
            expose_headers=_CORS_EXPOSED,
        )
    return app
