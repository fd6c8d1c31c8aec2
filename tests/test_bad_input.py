"""Bad requests get a problem JSON answer with the right status, and store nothing."""

from __future__ import annotations

import httpx
import pytest

CASES: list[tuple[str, bytes, int]] = [
    ("empty body", b"", 400),
    ("not JSON", b"cmd=/bin/true", 400),
    ("truncated JSON", b'{"cmd": "/bin/true"', 400),
    ("invalid UTF-8", b'{"cmd": "\xff"}', 400),
    ("a list", b'["/bin/true"]', 422),
    ("a string", b'"/bin/true"', 422),
    ("null", b"null", 422),
    ("no cmd", b'{"params": []}', 422),
    ("empty cmd", b'{"cmd": ""}', 422),
    ("cmd a number", b'{"cmd": 1}', 422),
    ("cmd a list", b'{"cmd": ["/bin/true"]}', 422),
    ("params a string", b'{"cmd": "/bin/echo", "params": "30"}', 422),
    ("params with a number", b'{"cmd": "/bin/echo", "params": [30]}', 422),
    ("params with null", b'{"cmd": "/bin/echo", "params": [null]}', 422),
    ("NUL in cmd", b'{"cmd": "/bin/true\\u0000"}', 422),
    ("NUL in a param", b'{"cmd": "/bin/echo", "params": ["a\\u0000b"]}', 422),
    ("unknown field", b'{"cmd": "/bin/true", "shell": true}', 422),
]


def count(client: httpx.Client) -> int:
    return len(client.get("/payloads").json())


@pytest.mark.parametrize(
    ("body", "status"), [(b, s) for _, b, s in CASES], ids=[c[0] for c in CASES]
)
def test_bad_body_is_refused_and_nothing_stored(
    client: httpx.Client, body: bytes, status: int
) -> None:
    before = count(client)
    response = client.post("/payloads", content=body)
    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["status"] == status
    assert problem["title"]
    assert problem["detail"]
    assert problem["type"]
    assert count(client) == before


def test_validation_problem_names_the_field(client: httpx.Client) -> None:
    problem = client.post("/payloads", json={"cmd": "/bin/echo", "params": ["ok", 7]}).json()
    assert "params.1" in problem["detail"]
    assert problem["errors"][0]["loc"] == "params.1"


def test_body_over_a_mebibyte_is_413(client: httpx.Client) -> None:
    before = count(client)
    big = b'{"cmd": "/bin/echo", "params": ["' + b"x" * (1024 * 1024) + b'"]}'
    response = client.post("/payloads", content=big)
    assert response.status_code == 413
    assert response.headers["content-type"] == "application/problem+json"
    assert count(client) == before


def test_chunked_body_over_the_limit_is_413(client: httpx.Client) -> None:
    def chunks() -> object:
        yield b'{"cmd": "/bin/echo", "params": ["'
        for _ in range(20):
            yield b"x" * 65536
        yield b'"]}'

    response = client.post("/payloads", content=chunks())  # type: ignore[arg-type]
    assert response.status_code == 413


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("PUT", "/payloads"),
        ("DELETE", "/payloads"),
        ("PATCH", "/payloads/abc"),
        ("POST", "/healthz"),
    ],
)
def test_wrong_method_is_405(client: httpx.Client, method: str, path: str) -> None:
    response = client.request(method, path)
    assert response.status_code == 405
    assert response.headers["content-type"] == "application/problem+json"
    assert "allow" in response.headers


def test_unknown_path_is_404_problem(client: httpx.Client) -> None:
    response = client.get("/nothing/here")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"


def test_any_content_type_is_read_as_json(client: httpx.Client) -> None:
    for content_type in ("application/x-www-form-urlencoded", "text/plain", "application/json"):
        response = client.post(
            "/payloads", content=b'{"cmd": "/bin/true"}', headers={"content-type": content_type}
        )
        assert response.status_code == 201
        assert response.json()["params"] == []
