"""`handler-serve`: build the settings, configure logging, run the app under uvicorn."""

from __future__ import annotations

import asyncio
import logging
import logging.config
import signal
import sys

import uvicorn
from pydantic import ValidationError
from pydantic_settings import CliApp

from pericles.api.app import create_app
from pericles.errors import StoreUnavailable
from pericles.logs import log_config
from pericles.settings import Settings
from pericles.store import open_store


def check_store(settings: Settings) -> None:
    """Open and close the store once before serving; raises `StoreUnavailable`.

    The app opens it again in its lifespan, where a failure would reach the user as a
    traceback from uvicorn: checking here turns a bad path into one clear line.
    """

    async def probe() -> None:
        store = open_store(settings.store, settings.max_output)
        await store.open()
        await store.close()

    asyncio.run(probe())


def serve(settings: Settings) -> None:
    config_dict = log_config(settings.log_level, settings.log_format)
    logging.config.dictConfig(config_dict)
    config = uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        log_config=config_dict,
        # An open output stream never ends by itself: without a bound, shutdown would wait on it.
        timeout_graceful_shutdown=max(1, int(settings.shutdown_grace)),
        loop="uvloop",
        http="httptools",
        server_header=False,
    )
    stop_signals: list[int] = []
    # uvicorn handles SIGINT and SIGTERM while it runs, then puts back the handlers it found
    # and raises the signal again. These are the ones it finds: they only note the signal, so
    # a requested stop, once drained, ends with status 0 instead of a KeyboardInterrupt.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, frame: stop_signals.append(signum))
    uvicorn.Server(config).run()


def main(argv: list[str] | None = None) -> None:
    try:
        settings = CliApp.run(Settings, cli_args=sys.argv[1:] if argv is None else argv)
    except ValidationError as exc:
        print(f"handler-serve: invalid settings:\n{exc}", file=sys.stderr)
        raise SystemExit(2) from None
    try:
        check_store(settings)
    except StoreUnavailable as exc:
        print(f"handler-serve: cannot use the store {settings.store}: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    serve(settings)
