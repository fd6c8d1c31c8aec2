"""`handler-serve`: build the settings, configure logging, run the app under uvicorn.

The server (`pericles.server`) is opened on uvicorn's event loop before uvicorn starts, and
closed after uvicorn has drained its connections: a store that cannot be used is then one
clear line, not a traceback from the app's lifespan.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import logging
import os
import resource
import signal
import socket
import sys
import threading
from collections.abc import Callable

import uvicorn

from pericles.actions import ActionsError
from pericles.api.app import create_app
from pericles.api.protocol import bounded_head_protocol
from pericles.cli import flags
from pericles.errors import SecretsKeyError, StoreUnavailable
from pericles.logs import configure as configure_logging
from pericles.policy import PolicyError
from pericles.process import UnknownIdentity
from pericles.server import Server, settings_tokens
from pericles.settings import Settings
from pericles.tokens import TokenConfigError, TokenSet

log = logging.getLogger("pericles.cli")


class RefusedExposure(Exception):
    """Listening where others can reach an unauthenticated server, without --insecure."""


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 and "localhost"; any other name may resolve anywhere."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_exposure(settings: Settings, tokens: TokenSet) -> str | None:
    """A warning to log at start, if any; raises `RefusedExposure` for what must not start."""
    if tokens or is_loopback(settings.host):
        if tokens and settings.tls_cert is None and not is_loopback(settings.host):
            return (
                f"listening on {settings.host} without TLS: bearer tokens cross the network "
                "in clear text unless a TLS proxy is in front (--tls-cert, --tls-key)"
            )
        return None
    if not settings.insecure:
        raise RefusedExposure(
            f"refusing to listen on {settings.host} without a token: anyone who can reach it "
            "could run any command; give --token or --tokens-file (or --insecure)"
        )
    return (
        f"--insecure: listening on {settings.host} with no token; anyone who can reach this "
        "port can run any command as this user"
    )


#: Descriptors kept back from connections whatever the settings: the store, logs, the loop.
_BASE_RESERVE = 128
#: Descriptors a running payload may hold: three pipes, its pidfd, its cgroup, a spare.
_PER_PAYLOAD = 8


def raise_open_files() -> int:
    """Raise the open-file soft limit to the hard limit; returns the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft != hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
    return soft


def connection_limit(open_files: int, max_running: int) -> int:
    """Connections that still leave descriptors for `max_running` payloads (0: no limit on
    them, so half of all) and the server's own files."""
    if max_running:
        reserve = _BASE_RESERVE + _PER_PAYLOAD * max_running
    else:
        reserve = max(open_files // 2, _BASE_RESERVE)
    return max(open_files - reserve, 16)


class _Server(uvicorn.Server):
    """uvicorn on a socket bound beforehand, still saying where it runs once it does.

    uvicorn logs "Uvicorn running on ..." only for sockets it binds itself; people and
    tests read the port (for --port 0) from that line. When told to stop, it tells the
    service first (`stopping`): long waits answer and event streams end, for uvicorn waits
    for open connections to close (up to `--shutdown-grace`) and a stream never closes
    by itself.
    """

    def __init__(self, config: uvicorn.Config, stopping: Callable[[], None]) -> None:
        super().__init__(config)
        self._stopping = stopping

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started and sockets:
            self._log_started_message(sockets)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        # Long waits answer first, so the requests in flight end within the graceful
        # period instead of being cancelled at its end (a 500 and a traceback).
        self._stopping()
        await super().shutdown(sockets)


def serve(
    settings: Settings, tokens: TokenSet, sock: socket.socket, warning: str | None = None
) -> None:
    config_dict = configure_logging(settings.log_level, settings.log_format, tokens)
    if warning:
        log.warning("%s", warning)
    if not is_loopback(settings.host) and not settings.public_host:
        log.warning(
            "listening on %s with no --public-host: requests that name this server by a "
            "host name get 403 (DNS rebinding guard); only its addresses are answered",
            settings.host,
        )
    open_files = raise_open_files()
    max_connections = settings.max_connections or connection_limit(open_files, settings.max_running)
    try:
        server = Server(settings, tokens, os.environ)
    except (PolicyError, ActionsError, UnknownIdentity, SecretsKeyError) as exc:
        sock.close()
        raise _fail(str(exc)) from None
    except StoreUnavailable as exc:
        sock.close()
        raise _store_failed(settings, exc) from None
    # Looked up in this module when called: bench/hello_serve.py swaps it for its own app.
    app = create_app(
        server.service, settings, server.tokens, server.metrics, actions_source=server.actions
    )
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        log_config=config_dict,
        # An open output stream never ends by itself: without a bound, shutdown would wait on it.
        timeout_graceful_shutdown=max(1, int(settings.shutdown_grace)),
        loop="uvloop",
        http=bounded_head_protocol(
            settings.max_header_bytes,
            settings.header_timeout,
            settings.body_timeout,
            max_connections,
        ),
        timeout_keep_alive=settings.keep_alive_timeout,
        ssl_certfile=settings.tls_cert,
        ssl_keyfile=settings.tls_key,
        server_header=False,
    )
    stop_signals: list[int] = []
    # uvicorn handles SIGINT and SIGTERM while it runs, then puts back the handlers it found
    # and raises the signal again. These are the ones it finds: they only note the signal, so
    # a requested stop, once drained, ends with status 0 instead of a KeyboardInterrupt.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, frame: stop_signals.append(signum))
    runner = asyncio.Runner(loop_factory=config.get_loop_factory())
    try:
        runner.run(
            _run(
                server,
                _Server(config, server.service.stop_waiting),
                sock,
                open_files,
                max_connections,
            )
        )
    except StoreUnavailable as exc:
        raise _store_failed(settings, exc) from None
    finally:
        _close_within(runner, _EXIT_WITHIN)


#: Seconds the event loop gets to finish its last tasks once the server has closed.
_EXIT_WITHIN = 10.0


def _close_within(runner: asyncio.Runner, seconds: float) -> None:
    """Close the loop; exit anyway if a task left behind (a client connection's stream
    waiting on a broker, say) does not finish in time. Payloads and the store are dealt
    with before this: what could still hang holds nothing of ours."""
    guard = threading.Timer(seconds, _exit_now, (seconds,))
    guard.daemon = True
    guard.start()
    try:
        runner.close()
    finally:
        guard.cancel()


def _exit_now(seconds: float) -> None:
    log.warning("the event loop did not close within %gs of shutdown: exiting", seconds)
    logging.shutdown()
    os._exit(0)


async def _run(
    server: Server,
    uvicorn_server: uvicorn.Server,
    sock: socket.socket,
    open_files: int,
    max_connections: int,
) -> None:
    await server.open()
    # Logged once the store is open: a start refused for its store stays one line.
    log.info("open files: up to %d; connections: up to %d", open_files, max_connections)
    try:
        await uvicorn_server.serve(sockets=[sock])
    finally:
        await server.close()


def _store_failed(settings: Settings, exc: StoreUnavailable) -> SystemExit:
    return _fail(f"cannot use the store {settings.store}: {exc}", EXIT_STORE)


#: handler-serve's exit status, also in `--help` and the README.
EXIT_STORE = 1
EXIT_USAGE = 2
EXIT_LISTEN = 3


def _fail(message: str, status: int = EXIT_USAGE) -> SystemExit:
    print(f"handler-serve: {message}", file=sys.stderr)
    return SystemExit(status)


def listen(host: str, port: int) -> socket.socket:
    """The listening socket, bound here so that a refusal is one clear line, not a log."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise _fail(f"cannot listen on {host}: {exc.strerror or exc}", EXIT_LISTEN) from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise _fail(
                f"port {port} is in use (another handler-serve? try --port 0 for any free "
                "port, or make serve PORT=...)",
                EXIT_LISTEN,
            ) from None
        raise _fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}", EXIT_LISTEN) from None
    return sock


def main(argv: list[str] | None = None) -> None:
    try:
        settings = flags.settings(sys.argv[1:] if argv is None else argv)
    except flags.UsageError as exc:
        for line in exc.lines:
            print(f"handler-serve: {line}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE) from None
    if settings.runner == "celery" and not settings.store.startswith("redis://"):
        print(
            "handler-serve: --runner celery needs a redis:// store (Redis is also its broker)",
            file=sys.stderr,
        )
        raise SystemExit(EXIT_USAGE)
    try:
        tokens = settings_tokens(settings)
        warning = check_exposure(settings, tokens)
    except (TokenConfigError, RefusedExposure) as exc:
        raise _fail(str(exc)) from None
    serve(settings, tokens, listen(settings.host, settings.port), warning)
