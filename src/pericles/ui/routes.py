"""Routes for the dashboard's files and the docs page, with cache and security headers."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

from fastapi import FastAPI, Request
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

STATIC = Path(str(resources.files("pericles.ui") / "static"))
DOCS = Path(str(resources.files("pericles.ui") / "docs"))

#: The page may run and style only with files of this server, and talk only to it: no
#: inline script or style, no eval, no frames, no plugins, no form posts elsewhere.
CSP = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "font-src 'self'",
        "manifest-src 'self'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)

SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


def _swagger_ui_dir() -> Path:
    # fastapi-offline ships Swagger UI's built files as package data (see docs/dashboard.md
    # for why this package). Only its files are used, not its FastAPI subclass.
    return Path(str(resources.files("fastapi_offline") / "static"))


class Assets(StaticFiles):
    """Starlette's static files (ETag, Last-Modified, 304s) with our cache policy and CSP.

    The file names carry no version, so a browser must ask again each time (`no-cache`);
    the ETag makes that ask a 304 without a body.
    """

    def file_response(
        self,
        full_path: str | os.PathLike[str],
        stat_result: os.stat_result,
        scope: Scope,
        status_code: int = 200,
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers["Cache-Control"] = "no-cache"
        response.headers.update(SECURITY_HEADERS)
        return response


def install(app: FastAPI, dashboard: bool) -> None:
    """Serve `/docs` (always) and, when `dashboard`, the dashboard at `/` and `/ui/...`."""
    docs = Assets(directory=DOCS)
    app.mount("/docs/assets", Assets(directory=_swagger_ui_dir()), name="docs-assets")

    @app.api_route("/docs", methods=["GET", "HEAD"], include_in_schema=False)
    async def docs_page(request: Request) -> Response:
        return await docs.get_response("docs.html", request.scope)

    @app.api_route("/docs/init.js", methods=["GET", "HEAD"], include_in_schema=False)
    async def docs_script(request: Request) -> Response:
        return await docs.get_response("init.js", request.scope)

    if not dashboard:
        return
    dashboard_files = Assets(directory=STATIC)
    app.mount("/ui", dashboard_files, name="ui")

    @app.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
    async def index(request: Request) -> Response:
        return await dashboard_files.get_response("index.html", request.scope)
