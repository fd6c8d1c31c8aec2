"""The composition root: settings -> store, runner, policy, tokens, service.

Everything the server is made of is built here and nowhere else, from the settings the entry
point parsed. `Server.open` readies the parts in order (store first: a bad store is the
likeliest failure, and nothing else has started when it fails); `Server.close` ends them in
the reverse order.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from pericles import policy as command_policy
from pericles import process
from pericles.actions.source import ActionSource
from pericles.api.app import create_app
from pericles.errors import StoreUnavailable
from pericles.metrics import Metrics
from pericles.outbound.sender import Sender
from pericles.posture import log_posture
from pericles.runner import Runner
from pericles.runner.local import LocalRunner
from pericles.service import Service
from pericles.settings import Settings
from pericles.store import open_store
from pericles.tokens import TokenSet, load_tokens

log = logging.getLogger("pericles.server")

#: Seconds the runner and the store each get to close at shutdown.
_CLOSE_WITHIN = 5.0


def settings_tokens(settings: Settings) -> TokenSet:
    """The tokens the settings name (`--token`, `--tokens-file`); raises `TokenConfigError`."""
    secret = settings.token.get_secret_value() if settings.token is not None else None
    return load_tokens(secret, settings.tokens_file)


class Server:
    """One server's parts, built from `settings`; `tokens` default to those the settings name.

    Raises `TokenConfigError`, `PolicyError`, `ActionsError`, `UnknownIdentity`,
    `SecretsKeyError` or
    `StoreUnavailable` (an unknown store URL) for bad settings. Builds only: nothing is
    opened or started yet. `environ` is the server's environment, where actions find their
    `hook_secret_env`.
    """

    def __init__(
        self,
        settings: Settings,
        tokens: TokenSet | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.settings = settings
        self.tokens = settings_tokens(settings) if tokens is None else tokens
        # Bare names in rules are looked up on the PATH payloads get (--payload-path).
        paths = process.HostPaths(settings.payload_path or process.DEFAULT_PATH)
        self.policy = command_policy.load(settings.allow, settings.policy, paths)
        self.actions = ActionSource(settings.actions, environ or {})
        self.run_as = process.parse_run_as(settings.run_as) if settings.run_as else None
        self.metrics = Metrics()
        self.store = open_store(settings.store, settings.max_output)
        self.sender = Sender(
            settings.callback_allow, settings.callback_timeout, settings.callback_concurrency
        )
        self.runner: Runner
        self.service: Service
        if settings.runner == "celery":
            self.runner, self.service = self._celery()
        else:
            self.runner = LocalRunner(
                settings.inherit_env,
                settings.max_stdin,
                self.run_as,
                settings.containment,
                payload_path=settings.payload_path,
                own_path_lookup=self.policy is not None,
            )
            self.service = Service(
                settings,
                self.store,
                self.runner,
                self.metrics,
                self.policy,
                sender=self.sender,
                callback_secrets=self.tokens.callback_secrets(),
            )

    def _celery(self) -> tuple[Runner, Service]:
        """Payloads run on `pericles worker`s; Redis is the store and the broker."""
        from pericles.runner.celery import CeleryRunner, Sealer
        from pericles.service.remote import RemoteService
        from pericles.store.redis import RedisStore

        settings = self.settings
        if not isinstance(self.store, RedisStore):
            raise StoreUnavailable("--runner celery needs a redis:// store (also its broker)")
        key_file = settings.secrets_key_file
        sealer = Sealer(key_file) if key_file is not None else None
        runner = CeleryRunner(settings.store, settings.inherit_env, settings.max_stdin, sealer)
        service = RemoteService(
            settings,
            self.store,
            runner,
            self.metrics,
            self.policy,
            sender=self.sender,
            callback_secrets=self.tokens.callback_secrets(),
        )
        return runner, service

    async def open(self) -> None:
        """Open the store, then the runner; take up what the store kept. Call once.

        Raises `StoreUnavailable` when the store cannot be used.
        """
        await self.store.open()
        try:
            await self.runner.open()
            log_posture(self.policy, self.run_as)
            await self.service.recover()
        except BaseException:
            await self.store.close()
            raise
        service = self.service
        self.metrics.track_counts(lambda: service.running_count, lambda: service.pending_count)
        self.actions.watch()  # SIGHUP reloads the actions file, from now on

    async def close(self) -> None:
        """Stop every payload (`--shutdown-grace`), then close the runner and the store."""
        self.actions.unwatch()
        await self.service.shutdown(self.settings.shutdown_grace)
        # Bounded: a broker or database that stops answering must not keep the process up
        # once every payload has been dealt with.
        for part in (self.runner, self.store):
            try:
                async with asyncio.timeout(_CLOSE_WITHIN):
                    await part.close()
            except TimeoutError:
                log.warning("%s did not close within %gs", type(part).__name__, _CLOSE_WITHIN)

    @asynccontextmanager
    async def running(self, app: Any = None) -> AsyncIterator[None]:
        """Open around a block: usable as an ASGI app's lifespan."""
        await self.open()
        try:
            yield
        finally:
            await self.close()

    def app(self, lifespan: bool = False) -> FastAPI:
        """The ASGI app over this server's service; with `lifespan`, the app opens and
        closes the server itself (for ASGI servers that import an app by name)."""
        return create_app(
            self.service,
            self.settings,
            self.tokens,
            self.metrics,
            lifespan=self.running if lifespan else None,
            actions_source=self.actions,
        )


def asgi_app(settings: Settings) -> FastAPI:
    """A whole server as an ASGI app that opens and closes itself in its lifespan."""
    return Server(settings).app(lifespan=True)
