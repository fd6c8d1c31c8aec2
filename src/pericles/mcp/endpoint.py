"""`/mcp`: the MCP server, on the API's own app and port, behind the API's own tokens.

The SDK's Streamable HTTP transport runs stateless: every request stands alone, so any of
several API replicas can answer it and nothing is kept between requests. Its answers are
plain JSON bodies (no SSE stream per request): the tools report no progress, and a JSON
answer passes every proxy.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from starlette.requests import Request
from starlette.routing import Match, Route
from starlette.types import Receive, Send
from starlette.types import Scope as AsgiScope

from pericles.api.auth import authenticate
from pericles.api.problems import Problem
from pericles.mcp.tools import build_server
from pericles.settings import Settings
from pericles.tokens import Scope

PATH = "/mcp"

# Host and Origin have one owner: the app-wide middleware that checks them for every route
# (issue P8), this one included. The SDK's own DNS-rebinding check would be a second list
# of admitted hosts to keep in step, so it is off here, on purpose.
_NO_SDK_HOST_CHECK = TransportSecuritySettings(enable_dns_rebinding_protection=False)


class McpEndpoint:
    """ASGI app: checks the bearer token as every route does, then lets the SDK answer.

    Any scope may connect; which tools a token sees and calls is `tools.ScopeGate`'s
    business. A missing or unknown token is answered 401 as problem JSON, before the SDK
    reads the body.
    """

    def __init__(self, manager: StreamableHTTPSessionManager) -> None:
        self._manager = manager

    async def __call__(self, scope: AsgiScope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            # Both raise `Problem`, which the app's exception middleware answers.
            await authenticate(Request(scope, receive), Scope.READ)
            if scope["method"] != "POST":
                # Stateless with JSON answers: there is no session to end (DELETE) and no
                # server-to-client stream to open (GET), which would only hold a connection.
                raise Problem(405, "method-not-allowed", "/mcp takes POST only", {"Allow": "POST"})
        await self._manager.handle_request(scope, receive, send)


class _NamedRoute(Route):
    """A route that puts itself in the scope as FastAPI's routes do: metrics label by it."""

    def matches(self, scope: AsgiScope) -> tuple[Match, AsgiScope]:
        match, child = super().matches(scope)
        if match is not Match.NONE:
            child["route"] = self
        return match, child


def mcp_route(settings: Settings) -> tuple[Route, Callable[[], AbstractAsyncContextManager[None]]]:
    """The `/mcp` route, and what the app's lifespan must run while it serves."""
    server = build_server()
    # streamable_http_app() makes the server's session manager; its own Starlette app is not
    # used: the route below mounts the manager on our app, behind our authentication.
    server.streamable_http_app(
        stateless_http=True,
        json_response=True,
        transport_security=_NO_SDK_HOST_CHECK,
        max_request_body_size=settings.max_body,
    )
    manager = server.session_manager
    return _NamedRoute(PATH, McpEndpoint(manager)), manager.run
