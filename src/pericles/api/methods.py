"""HTTP methods: HEAD on every GET route, and a 405's `Allow` naming every method of a path.

FastAPI routes answer exactly the methods they declare, so HEAD would be 405 wherever GET
works, and Starlette's 405 names only the methods of the first route that matched the path.
"""

from __future__ import annotations

from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: The methods a route of this API may declare; OPTIONS is answered by CORS, if at all.
_METHODS = ("DELETE", "GET", "PATCH", "POST", "PUT")


def _answers(routes: list[BaseRoute], scope: Scope, method: str) -> bool:
    probe = {**scope, "method": method}
    return any(route.matches(probe)[0] is Match.FULL for route in routes)


def allowed_methods(routes: list[BaseRoute], scope: Scope) -> list[str]:
    """Every method some route answers at the scope's path, HEAD wherever GET is.

    Asked of each route through `matches`, so routers included in routers are seen too.
    """
    methods = {method for method in _METHODS if _answers(routes, scope, method)}
    if "GET" in methods:
        methods.add("HEAD")
    return sorted(methods)


class _HeadDone(Exception):
    """The headers of a HEAD answer are sent: the GET behind it need not go on."""


class HeadAsGet:
    """Answers HEAD as the GET of the same path would be answered, headers only.

    The GET is ended once its headers are out, so a HEAD on a stream that never ends
    (`/events`) still gets its answer at once.
    """

    def __init__(self, app: ASGIApp, routes: list[BaseRoute]) -> None:
        self.app = app
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return
        if not _answers(self.routes, scope, "GET"):
            await self.app(scope, receive, send)
            return

        async def headers_only(message: Message) -> None:
            if message["type"] == "http.response.start":
                await send(message)
                return
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            raise _HeadDone

        try:
            await self.app({**scope, "method": "GET"}, receive, headers_only)
        except* _HeadDone:
            pass
