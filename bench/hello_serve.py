"""Serve `hello_app` exactly as `handler-serve` serves Pericles: the hello baseline's server.

Same entry point, so the same uvicorn config (uvloop, the httptools protocol handler-serve
uses, keep-alive, logging with the access log): only the app differs. Takes handler-serve's
flags: `python bench/hello_serve.py --port 0`.
"""

from __future__ import annotations

import sys

from fastapi import FastAPI

import pericles.cli.serve as serve_cli
from hello_app import app


def _hello_app(*args: object, **kwargs: object) -> FastAPI:
    return app


def main() -> None:
    if not hasattr(serve_cli, "create_app"):
        raise SystemExit("pericles.cli.serve builds its app otherwise now: update this file")
    # serve() looks create_app up in its module when it runs: this swaps the app, nothing else
    # (the server's parts are still opened and closed around it, as for Pericles).
    setattr(serve_cli, "create_app", _hello_app)  # noqa: B010
    serve_cli.main(sys.argv[1:])


if __name__ == "__main__":
    main()
