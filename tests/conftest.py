from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.browser import browser  # noqa: F401  (a fixture for every module)
from tests.helpers import SQLITE_DIR_ENV, Server, start_server

#: Every store the suite runs against. A module may narrow it with its own `STORES`.
STORES = ("memory", "sqlite")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "store_kind" in metafunc.fixturenames:
        stores = getattr(metafunc.module, "STORES", STORES)
        metafunc.parametrize("store_kind", stores, indirect=True, scope="module")


@pytest.fixture(scope="module")
def store_kind(request: pytest.FixtureRequest) -> str:
    """The store this module's servers use: every test module runs once per store."""
    kind: str = request.param
    return kind


@pytest.fixture(scope="module")
def store_dir(store_kind: str, tmp_path_factory: pytest.TempPathFactory) -> Path | None:
    return tmp_path_factory.mktemp("store") if store_kind == "sqlite" else None


@pytest.fixture(scope="module", autouse=True)
def _servers_use_the_store(store_dir: Path | None) -> Iterator[None]:
    # Servers a test starts itself (start_server, running_server) take this store too.
    with pytest.MonkeyPatch.context() as patch:
        if store_dir is None:
            patch.delenv(SQLITE_DIR_ENV, raising=False)
        else:
            patch.setenv(SQLITE_DIR_ENV, str(store_dir))
        yield


@pytest.fixture(scope="module")
def server(store_dir: Path | None) -> Iterator[Server]:
    """One real server shared by a module's tests, on the module's store."""
    env = {} if store_dir is None else {SQLITE_DIR_ENV: str(store_dir)}
    srv = start_server(env=env)
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def client(server: Server) -> Iterator[httpx.Client]:
    with server.client() as c:
        yield c
