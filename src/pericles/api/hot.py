"""The hot routes without FastAPI's dependency solving: create, list and show payloads.

Profiles put FastAPI's per-request work (solving the route's dependencies, validating its
parameters, walking included routers) at about half of the server's time on
`GET /payloads/{id}`. The three routes clients hit most get a plain Starlette route each,
placed ahead of everything else, that does the same work directly: the same token check
(`auth.authorize_request`), the same body parser, the same service calls and the same
rendering.

A hot route answers only the common case it can judge exactly: known query parameters with
plainly valid values, and no header that needs FastAPI's validation. Anything else (a
typo in a parameter, `wait=abc`, an `Idempotency-Key`) is handed to the FastAPI route
behind it, which answers as it always has, problem bodies included. The FastAPI routes stay
the source of the OpenAPI document and of the known query parameters.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Match, Route
from starlette.types import Receive, Scope, Send

from pericles.api import payloads
from pericles.api.auth import authorize_request, for_limited_tokens
from pericles.api.problems import Problem
from pericles.api.render import RenderCache
from pericles.model import MAX_WAIT, ListQuery
from pericles.service import Service
from pericles.settings import Settings

#: The ids the server makes (uuid4 as 32 lowercase hex); any other id is the FastAPI
#: route's to answer (a 404 as ever), and `/payloads/counts` never looks like one.
_ID = re.compile(r"^/payloads/(?P<payload_id>[0-9a-f]{32})$")
_DECIMAL = re.compile(rb"[0-9]{1,6}(?:\.[0-9]{1,9})?")
_LIST_MANY = frozenset({"status", "label"})
_LIST_ONE = frozenset({"limit", "after", "order", "q"})
_LIMIT_MAX = 100_000
_Q_MAX = 1024

#: Set on a request the hot routes handed on: the router's second pass skips them.
_PASSED = "pericles.hot.passed"

Handler = Callable[[Request], Awaitable[Response | None]]


def _wait(query: bytes) -> float | bool | None:
    """The `wait=` of a query string: None without one, False when not plainly valid."""
    if not query:
        return None
    name, sep, value = query.partition(b"=")
    # Plain decimals only: spaces, exponents, "nan" or "%31" are the FastAPI route's to
    # read (or to refuse in its own words).
    if name != b"wait" or not sep or _DECIMAL.fullmatch(value) is None:
        return False
    seconds = float(value)
    if not 0 < seconds <= MAX_WAIT:
        return False
    return seconds


class HotRoute(Route):
    """One method on one path, answered by `handler`; when it returns None, by the routes
    behind it (the router runs again, passing the hot routes by)."""

    def __init__(
        self, path: str, method: str, handler: Handler, pattern: re.Pattern[str] | None = None
    ) -> None:
        super().__init__(path, self._serve, methods=[method], include_in_schema=False)
        self.app = self._serve
        if pattern is not None:
            self.path_regex = pattern
        self._method = method
        self._handler = handler

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        # Never a partial match: a 405 and its `Allow` are the FastAPI routes' to give.
        if scope["type"] != "http" or scope["method"] != self._method or _PASSED in scope:
            return Match.NONE, {}
        match = self.path_regex.match(scope["path"])
        if match is None:
            return Match.NONE, {}
        # The route and its template for the metrics and the query check, as the router
        # would note them; the endpoint for the check of tokens limited to actions.
        child = {"endpoint": self._handler, "path_params": match.groupdict(), "route": self}
        return Match.FULL, child

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = await self._handler(Request(scope, receive))
        if response is None:
            scope[_PASSED] = True
            await scope["router"](scope, receive, send)
            return
        await response(scope, receive, send)


class HotRoutes:
    """The handlers, over the app's service and settings."""

    def __init__(self, service: Service, settings: Settings, cache: RenderCache) -> None:
        self.service = service
        self.settings = settings
        self.cache = cache

    async def get_one(self, request: Request) -> Response | None:
        wait = _wait(request.scope["query_string"])
        if wait is False:
            return None
        await authorize_request(request)
        payload_id = request.scope["path_params"]["payload_id"]
        service = self.service
        record = await (service.get(payload_id) if wait is None else service.wait(payload_id, wait))
        return Response(self.cache.render(record.id, record), media_type="application/json")

    async def create(self, request: Request) -> Response | None:
        wait = _wait(request.scope["query_string"])
        if wait is False:
            return None
        for name, _ in request.scope["headers"]:
            if name == b"idempotency-key":
                return None  # its length is the FastAPI route's to check
        token = await authorize_request(request)
        body = await payloads._read_body(request, self.settings.max_body)
        spec = payloads._parse_spec(body)
        created_by = token.name if token is not None else None
        return await payloads.created(self.service, spec, None, created_by, wait)

    @for_limited_tokens  # shows a token limited to actions only its own, as the route does
    async def list(self, request: Request) -> Response | None:
        fields = _list_fields(request.scope["query_string"])
        if fields is None:
            return None
        token = await authorize_request(request)
        actions = token.actions if token is not None else None
        return await payloads.listed(request, self.service, ListQuery(**fields, actions=actions))


def _list_fields(raw: bytes) -> dict[str, Any] | None:
    """The list query's fields from a query string; None when any is not plainly valid."""
    try:
        pairs = parse_qsl(raw.decode("latin-1"), keep_blank_values=True)
    except ValueError:
        return None
    many: dict[str, list[str]] = {"status": [], "label": []}
    one: dict[str, str] = {}
    for key, value in pairs:
        if key in _LIST_MANY:
            many[key].append(value)
        elif key in _LIST_ONE and key not in one:
            one[key] = value
        else:
            return None  # unknown, or given twice: the FastAPI route words it
    limit = one.get("limit")
    if limit is not None and not (limit.isascii() and limit.isdigit() and limit[:1] != "0"):
        return None
    if limit is not None and int(limit) > _LIMIT_MAX:
        return None
    order = one.get("order", "asc")
    if order not in ("asc", "desc") or len(one.get("q", "")) > _Q_MAX:
        return None
    try:
        statuses = payloads._statuses(many["status"])
        labels = payloads._labels(many["label"])
    except Problem:
        return None
    return dict(
        statuses=statuses,
        labels=labels,
        limit=int(limit) if limit is not None else None,
        after=one.get("after"),
        descending=order == "desc",
        text=one.get("q", ""),
    )


def install(app: FastAPI, service: Service, settings: Settings) -> None:
    """Put the hot routes ahead of every other route of `app`, which must already hold the
    FastAPI routes they stand in front of."""
    hot = HotRoutes(service, settings, app.state.rendered)
    routes: list[BaseRoute] = [
        HotRoute("/payloads/{payload_id}", "GET", hot.get_one, _ID),
        HotRoute("/payloads", "POST", hot.create),
        HotRoute("/payloads", "GET", hot.list),
    ]
    app.router.routes[0:0] = routes
