"""The hot routes (`api/hot.py`): create, list and show without FastAPI's dependencies.

They must answer exactly as the FastAPI routes behind them did, and hand those anything
they do not judge themselves; `POST /payloads?wait=` creates and long-polls in one request.
"""

from __future__ import annotations

import re

import httpx
import pytest

from tests.helpers import Server, post, wait_for_status

STORES = ("memory",)  # the routes, not the store, are under test


def test_create_with_wait_answers_201_with_the_ended_record(client: httpx.Client) -> None:
    response = client.post("/payloads?wait=10", content=b'{"cmd": "/bin/echo", "params": ["hi"]}')
    assert response.status_code == 201
    record = response.json()
    assert record["status"] == "finished"
    assert record["exit_code"] == 0
    assert response.headers["location"] == f"/payloads/{record['id']}"
    # The same bytes a later GET gives: one renderer for both.
    assert client.get(response.headers["location"]).content == response.content


def test_create_with_a_short_wait_answers_with_the_record_as_it_is(client: httpx.Client) -> None:
    response = client.post("/payloads?wait=0.05", json={"cmd": "/bin/sleep", "params": ["30"]})
    assert response.status_code == 201
    record = response.json()
    assert record["status"] in ("pending", "working")
    client.post(f"/payloads/{record['id']}/cancel")
    wait_for_status(client, record["id"], "cancelled")


def test_any_content_type_still_creates_a_pending_record(client: httpx.Client) -> None:
    for content_type in ("application/x-www-form-urlencoded", "text/plain", "image/png"):
        response = client.post(
            "/payloads",
            content=b'{"cmd": "/bin/sleep", "params": ["30"]}',
            headers={"Content-Type": content_type},
        )
        assert response.status_code == 201
        record = response.json()
        assert list(record)[:4] == ["status", "cmd", "params", "id"]
        assert record["status"] == "pending"
        client.post(f"/payloads/{record['id']}/cancel")


@pytest.mark.parametrize(
    ("method", "path", "wording"),
    [
        ("POST", "/payloads?wait=abc", "wait"),
        ("POST", "/payloads?wait=0", "wait"),
        ("POST", "/payloads?wait=301", "wait"),
        ("POST", "/payloads?wiat=1", "unknown query parameter 'wiat'"),
        ("GET", "/payloads/{id}?wait=nan", "wait"),
        ("GET", "/payloads/{id}?wait=-1", "wait"),
        ("GET", "/payloads/{id}?wait=1&wait=2&x=1", "unknown query parameter 'x'"),
        ("GET", "/payloads?limit=0", "limit"),
        ("GET", "/payloads?limit=100001", "limit"),
        ("GET", "/payloads?order=up", "order"),
        ("GET", "/payloads?status=bogus", "status"),
        ("GET", "/payloads?label=novalue", "label"),
        ("GET", "/payloads?stauts=error", "unknown query parameter 'stauts'"),
    ],
)
def test_what_the_hot_routes_do_not_judge_is_refused_as_before(
    client: httpx.Client, method: str, path: str, wording: str
) -> None:
    record = post(client, "/bin/true")
    response = client.request(
        method, path.replace("{id}", record["id"]), content=b'{"cmd": "/bin/true"}'
    )
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert wording in response.json()["detail"]


def test_list_queries_the_hot_route_hands_on_still_work(client: httpx.Client) -> None:
    record = post(client, "/bin/true", labels={"team": "hot"})
    wait_for_status(client, record["id"], "finished")
    # `limit=007` and a repeated `order` are the FastAPI route's to read: same answer.
    for query in ("label=team=hot&limit=007", "label=team=hot&order=desc&order=asc"):
        response = client.get(f"/payloads?{query}")
        assert response.status_code == 200
        assert [r["id"] for r in response.json()] == [record["id"]]


def test_list_pages_link_to_the_next(client: httpx.Client) -> None:
    ids = [post(client, "/bin/true", labels={"page": "p"})["id"] for _ in range(3)]
    first = client.get("/payloads?label=page=p&limit=2")
    assert [r["id"] for r in first.json()] == ids[:2]
    link = re.fullmatch(r'<([^>]+)>; rel="next"', first.headers["link"])
    assert link is not None
    assert [r["id"] for r in client.get(link[1]).json()] == ids[2:]


def test_head_and_metrics_see_the_hot_routes(server: Server, client: httpx.Client) -> None:
    record = post(client, "/bin/true")
    wait_for_status(client, record["id"], "finished")
    got = client.get(f"/payloads/{record['id']}")
    head = client.head(f"/payloads/{record['id']}")
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["content-length"] == got.headers["content-length"]
    assert head.headers["content-type"] == "application/json"
    metrics = client.get("/metrics").text
    # Counted under the template, never the raw path, as the FastAPI route was.
    assert re.search(
        r'pericles_http_requests_total\{[^}]*route="/payloads/\{payload_id\}"', metrics
    ), metrics[:2000]
    assert record["id"] not in metrics


def test_unknown_ids_are_404_problems(client: httpx.Client) -> None:
    for payload_id in ("0" * 32, "nope"):
        response = client.get(f"/payloads/{payload_id}")
        assert response.status_code == 404
        assert response.headers["content-type"] == "application/problem+json"


def test_the_document_names_wait_on_create(client: httpx.Client) -> None:
    document = client.get("/openapi.json").json()
    create = document["paths"]["/payloads"]["post"]
    wait = next(p for p in create["parameters"] if p["name"] == "wait")
    assert wait["in"] == "query"
    assert wait["schema"]["type"] == "number"
    assert wait["schema"]["maximum"] == 300
    # The hot routes add no operation of their own.
    assert set(document["paths"]["/payloads"]) == {"get", "post"}
