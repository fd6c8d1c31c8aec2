from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.browser import browser  # noqa: F401  (a fixture for every module)
from tests.cluster import CLUSTER, STORES, RedisServer, Worker, start_worker
from tests.helpers import CLUSTER_ENV, SQLITE_DIR_ENV, Server, start_server


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


@pytest.fixture(scope="module")
def cluster(
    store_kind: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[RedisServer, Worker] | None]:
    """For the celery configuration, a redis-server and one worker for the module."""
    if store_kind != CLUSTER:
        yield None
        return
    redis = RedisServer(tmp_path_factory.mktemp("redis")).start()
    try:
        worker = start_worker(redis.url())
        try:
            yield redis, worker
        finally:
            worker.stop()
    finally:
        redis.stop()


@pytest.fixture(scope="module")
def store_env(store_dir: Path | None, cluster: tuple[RedisServer, Worker] | None) -> dict[str, str]:
    """The environment that points a server at the module's store (and runner)."""
    if cluster is not None:
        return {CLUSTER_ENV: cluster[0].url()}
    return {} if store_dir is None else {SQLITE_DIR_ENV: str(store_dir)}


@pytest.fixture(scope="module", autouse=True)
def _servers_use_the_store(store_env: dict[str, str]) -> Iterator[None]:
    # Servers a test starts itself (start_server, running_server) take this store too.
    with pytest.MonkeyPatch.context() as patch:
        for name in (SQLITE_DIR_ENV, CLUSTER_ENV):
            if name in store_env:
                patch.setenv(name, store_env[name])
            else:
                patch.delenv(name, raising=False)
        yield


@pytest.fixture(scope="module")
def server(store_env: dict[str, str]) -> Iterator[Server]:
    """One real server shared by a module's tests, on the module's store."""
    srv = start_server(env=store_env)
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def client(server: Server) -> Iterator[httpx.Client]:
    with server.client() as c:
        yield c
