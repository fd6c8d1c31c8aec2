"""The ASGI app: routes and error mapping over a service built elsewhere (`pericles.server`)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI
from fastapi.params import Depends as DependsParam
from starlette.middleware.cors import CORSMiddleware

from pericles import __version__, ui
from pericles.actions.hooks import Deliveries
from pericles.actions.source import ActionSource
from pericles.api import (
    actions,
    check,
    control,
    deliveries,
    events,
    hot,
    index,
    openapi,
    operations,
    output,
    payloads,
    problems,
)
from pericles.api.auth import AUTH_RESPONSES, authorize
from pericles.api.methods import HeadAsGet
from pericles.api.origin import AdmittedHosts, BrowserGuard
from pericles.api.query import known_query_parameters
from pericles.api.render import RenderCache
from pericles.api.scrub import ScrubProblems
from pericles.api.telemetry import RequestMetrics
from pericles.metrics import Metrics
from pericles.service import Service
from pericles.settings import Settings
from pericles.tokens import TokenSet

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


#: Opens and closes what the app serves, around its life; None when the caller does.
Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]


def _with(
    lifespan: Lifespan | None, inner: Callable[[], AbstractAsyncContextManager[None]] | None
) -> Lifespan | None:
    """`lifespan` with `inner` running inside it: `inner` ends first, while the service is
    still open (the MCP tasks wait on it)."""
    if inner is None:
        return lifespan

    @asynccontextmanager
    async def both(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            if lifespan is not None:
                await stack.enter_async_context(lifespan(app))
            await stack.enter_async_context(inner())
            yield

    return both


def create_app(
    service: Service,
    settings: Settings,
    tokens: TokenSet,
    metrics: Metrics,
    lifespan: Lifespan | None = None,
    actions_source: ActionSource | None = None,
) -> FastAPI:
    """The app in front of `service`; `tokens` guard it unless empty, `metrics` count it.

    `actions_source` holds the named actions (none when None).
    """
    # Imported only when asked for: without --mcp the SDK is not loaded and /mcp is a 404.
    mcp_running: Callable[[], AbstractAsyncContextManager[None]] | None = None
    if settings.mcp:
        from pericles.mcp.endpoint import mcp_route

        route, mcp_running = mcp_route(settings)
    app = FastAPI(
        title="Pericles",
        version=__version__,
        summary="Run and watch processes over HTTP",
        lifespan=_with(lifespan, mcp_running),
        # /docs is served by pericles.ui from local files; FastAPI's pages load from a CDN.
        docs_url=None,
        redoc_url=None,
    )
    app.state.service = service
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.rendered = RenderCache()
    app.state.tokens = tokens
    app.state.actions = actions_source or ActionSource(None, {})
    # Hook deliveries seen lately, to refuse replays; kept across reloads of the actions.
    app.state.deliveries = Deliveries()
    problems.install(app)
    openapi.install(app)
    # Without tokens nothing is checked, and the OpenAPI document says so by naming no
    # security scheme. /healthz and /readyz stay open either way, for load balancers.
    # Unknown query parameters are refused after the token is checked, never before.
    known = Depends(known_query_parameters)
    guard: list[DependsParam] = [Depends(authorize), known] if tokens else [known]
    denied: dict[int | str, dict[str, Any]] = AUTH_RESPONSES if tokens else {}
    # check before payloads: its path must not be taken for a payload id by a later route.
    routers = (
        check.router,
        payloads.router,
        output.router,
        events.router,
        control.router,
        deliveries.router,
        actions.router,
    )
    for router in routers:
        app.include_router(
            router, dependencies=guard, responses={**problems.PROBLEM_RESPONSES, **denied}
        )
    if not settings.ui:
        # With the dashboard on, `/` is its page (pericles.ui); without, this JSON index.
        app.include_router(index.router, dependencies=[known])
    app.include_router(operations.router, dependencies=[known])
    # Not behind the token guard: a delivery's signature is its credential.
    app.include_router(actions.hook_router, responses=problems.PROBLEM_RESPONSES)
    if settings.mcp:
        # Authenticated by the endpoint itself: MCP needs `read` to connect, `run` per tool.
        app.router.routes.append(route)
    if settings.metrics:
        app.include_router(operations.metrics_router, dependencies=guard, responses=denied)
    # After the FastAPI routes they stand in front of: they hand those what they do not judge.
    hot.install(app, service, settings)
    ui.install(app, dashboard=settings.ui)
    app.add_middleware(HeadAsGet, routes=app.router.routes)
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
    # Outermost of all: a request from an unadmitted Host or a foreign page reaches nothing.
    hosts = AdmittedHosts(settings.host, settings.public_host)
    app.add_middleware(BrowserGuard, hosts=hosts, cors_origins=settings.cors_origin)
    if tokens:
        # Around everything, the guard's own refusals included: they quote a Host, an origin.
        app.add_middleware(ScrubProblems, tokens=tokens)
    return app
