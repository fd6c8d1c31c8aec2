"""The one way a route reaches the service: a typed dependency on `app.state`."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from pericles.service import Service
from pericles.settings import Settings


# `async def` although they never await: FastAPI runs a plain `def` dependency in its
# thread pool, and that hop costs more than the whole lookup (measured: +57% GET req/s).
def service_of(request: Request) -> Service:
    service: Service = request.app.state.service
    return service


async def _service(request: Request) -> Service:
    return service_of(request)


async def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


ServiceDep = Annotated[Service, Depends(_service)]
SettingsDep = Annotated[Settings, Depends(_settings)]
