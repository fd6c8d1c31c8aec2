"""Counting HTTP requests by route template, as plain ASGI middleware.

Plain ASGI rather than Starlette's BaseHTTPMiddleware: that one buffers nothing but runs
the app in another task, which breaks the disconnect handling of streamed responses.
"""

from __future__ import annotations

import time

from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pericles.metrics import Metrics

UNMATCHED = "<unmatched>"


class RequestMetrics:
    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        code = 500

        async def send_and_note(message: Message) -> None:
            nonlocal code
            if message["type"] == "http.response.start":
                code = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            route = scope.get("route")
            # The template (/payloads/{payload_id}), never the raw path: ids would explode
            # the number of series.
            template = (
                route.path if isinstance(route, BaseRoute) and hasattr(route, "path") else UNMATCHED
            )
            self.metrics.request(template, scope["method"], code, time.perf_counter() - started)
