"""What a newcomer with curl notices: methods, HEAD, problem text, the index at `/`."""

from __future__ import annotations

import httpx
import pytest

from tests.helpers import running_server

STORES = ("memory",)  # none of this depends on the store


def test_405_allows_every_method_of_the_path(client: httpx.Client) -> None:
    response = client.put("/payloads")
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, HEAD, POST"
    assert "use GET, HEAD, POST" in response.json()["detail"]
    one = client.put("/payloads/0123")
    assert one.headers["allow"] == "DELETE, GET, HEAD"


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("/", "text/html; charset=utf-8"),
        ("/payloads", "application/json"),
        ("/openapi.json", "application/json"),
        # A GET of /events never ends: its HEAD is answered at once all the same.
        ("/events", "text/event-stream; charset=utf-8"),
    ],
)
def test_head_answers_as_get_without_a_body(
    client: httpx.Client, path: str, content_type: str
) -> None:
    head = client.head(path)
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["content-type"] == content_type


def test_head_on_a_post_only_path_is_405(client: httpx.Client) -> None:
    response = client.head("/payloads/0123/cancel")
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/payloads/nope", None),
        ("PUT", "/payloads", None),
        ("GET", "/payloads?limit=0", None),
        ("GET", "/payloads?stauts=error", None),
        ("POST", "/payloads", b"{"),
        ("POST", "/payloads", b'{"cmd": ""}'),
        ("GET", "/nowhere", None),
    ],
)
def test_problem_bodies_end_with_a_newline(
    client: httpx.Client, method: str, path: str, body: bytes | None
) -> None:
    response = client.request(method, path, content=body)
    assert response.headers["content-type"] == "application/problem+json"
    assert response.content.endswith(b"}\n")


@pytest.mark.parametrize(
    ("path", "says"),
    [
        ("/payloads?limit=0", "query parameter limit: must be at least 1, got '0'"),
        ("/payloads?limit=many", "query parameter limit: must be a whole number, got 'many'"),
        ("/payloads?stauts=error", "unknown query parameter 'stauts'"),
        ("/payloads?order=up", "query parameter order: must be one of 'asc' or 'desc'"),
    ],
)
def test_bad_query_parameters_are_named(client: httpx.Client, path: str, says: str) -> None:
    response = client.get(path)
    assert response.status_code == 422
    assert says in response.json()["detail"]


@pytest.mark.parametrize(
    ("spec", "detail"),
    [
        ({"cmd": ""}, "cmd: must not be empty"),
        ({}, "cmd: is required"),
        ({"cmd": "x", "params": "a b"}, "params: must be a list"),
        ({"cmd": "x", "nope": 1}, "nope: is not a known field"),
        ({"cmd": "x", "timeout": 0}, "timeout: must be greater than 0"),
        ({"cmd": "x", "env": {"A=B": "c"}}, "env.A=B: must not contain '='"),
    ],
)
def test_spec_errors_in_the_users_words(
    client: httpx.Client, spec: dict[str, object], detail: str
) -> None:
    response = client.post("/payloads", json=spec)
    assert response.status_code == 422
    assert response.json()["detail"] == detail


def test_an_integer_valued_float_is_an_integer(client: httpx.Client) -> None:
    spec = {"cmd": "/bin/true", "priority": 2.0, "limits": {"max_open_files": 64.0}}
    record = client.post("/payloads", json=spec).json()
    assert record["priority"] == 2
    assert record["limits"] == {"max_open_files": 64}
    assert client.post("/payloads", json={"cmd": "/bin/true", "priority": 2.5}).status_code == 422


def test_without_the_dashboard_the_root_is_an_index_of_links() -> None:
    # With the dashboard on (the default), `/` is its page: see test_ui_http.
    with running_server("--no-ui") as server, server.client() as client:
        index = client.get("/").json()
        for name in ("payloads", "docs", "openapi", "metrics"):
            assert client.get(index["links"][name]).status_code == 200


def test_the_document_marks_all_but_the_seeds_fields_optional(client: httpx.Client) -> None:
    payload = client.get("/openapi.json").json()["components"]["schemas"]["Payload"]
    assert sorted(payload["required"]) == ["cmd", "id", "params", "status"]
