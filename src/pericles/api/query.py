"""Unknown query parameters are refused, not ignored.

`GET /payloads?stauts=error` would otherwise list every payload, and the user would never
learn of the typo. What a route accepts is what the OpenAPI document lists for it: one
source, so the document and the server cannot disagree about it.
"""

from __future__ import annotations

from fastapi import FastAPI, Request

from pericles.api.problems import Problem

_Known = dict[tuple[str, str], frozenset[str]]


def _known(app: FastAPI) -> _Known:
    known: _Known | None = getattr(app.state, "query_parameters", None)
    if known is None:
        known = {}
        for path, operations in app.openapi().get("paths", {}).items():
            for method, operation in operations.items():
                names = {p["name"] for p in operation.get("parameters", []) if p["in"] == "query"}
                known[(path, method.upper())] = frozenset(names)
        app.state.query_parameters = known
    return known


async def known_query_parameters(request: Request) -> None:
    """A dependency of every route: 422 naming any query parameter the route has not."""
    if not request.query_params:
        return
    route = request.scope.get("route")
    path = getattr(route, "path_format", None)
    allowed = _known(request.app).get((path or "", request.method))
    if allowed is None:
        return  # not in the document (HEAD is answered as GET, which is)
    unknown = sorted(set(request.query_params) - allowed)
    if unknown:
        known = ", ".join(sorted(allowed)) or "none"
        raise Problem(
            422,
            "invalid-query",
            f"unknown query parameter {', '.join(map(repr, unknown))}; this one takes: {known}",
        )
