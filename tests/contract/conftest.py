"""Fixtures for the interface suites: every backend of an interface, one line each.

A new backend joins every suite of its interface by one line here: `STORE_URLS` for a
`Store` (its URL for `open_store`), `RUNNERS` for a `Runner`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pericles.runner import Runner
from pericles.runner.local import LocalRunner
from pericles.store import Store, open_store
from tests.cluster import RedisServer

#: Store backends by name: (URL for `open_store` given a fresh directory, durable?).
STORE_URLS: dict[str, tuple[Callable[[Path], str], bool]] = {
    "memory": (lambda directory: "memory://", False),
    "sqlite": (lambda directory: f"sqlite:///{directory / 'store.db'}", True),
    # The URL of the session's redis-server (`contract_redis`), its database emptied per test.
    "redis": (lambda directory: "redis://", True),
}

#: Runner backends by name.
RUNNERS: dict[str, Callable[[], Runner]] = {
    "local": lambda: LocalRunner(),
}


@pytest.fixture(autouse=True)
def _servers_use_the_store() -> None:
    # These suites start no server: they are not run once per server store (tests/conftest).
    return None


class StoreBackend:
    """Opens stores of one backend over the same place, as a restarted server would."""

    def __init__(self, name: str, directory: Path) -> None:
        make_url, self.durable = STORE_URLS[name]
        self.name = name
        self.url = make_url(directory)

    def new(self, max_output: int = 1024) -> Store:
        return open_store(self.url, max_output)


@pytest.fixture(scope="session")
def contract_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("contract-redis")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=sorted(STORE_URLS))
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> StoreBackend:
    backend = StoreBackend(request.param, tmp_path)
    if backend.url == "redis://":
        redis: RedisServer = request.getfixturevalue("contract_redis")
        redis.flush()
        backend.url = redis.url()
    return backend


@pytest.fixture(params=sorted(RUNNERS))
def runner(request: pytest.FixtureRequest) -> Runner:
    return RUNNERS[request.param]()
