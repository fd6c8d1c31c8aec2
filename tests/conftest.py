from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.helpers import Server, start_server


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    """One real server shared by a module's tests."""
    srv = start_server()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def client(server: Server) -> Iterator[httpx.Client]:
    with server.client() as c:
        yield c
