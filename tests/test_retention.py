"""Ended payloads are forgotten past --keep-finished or --keep-for; lists filter and page."""

from __future__ import annotations

import re

import httpx
import pytest

from tests.helpers import (
    is_terminal,
    post,
    post_many,
    running_server,
    server_rss,
    wait_for_status,
    wait_until,
)


def ids_of(client: httpx.Client, **params: object) -> list[str]:
    return [r["id"] for r in client.get("/payloads", params=params).json()]  # type: ignore[arg-type]


def test_keep_finished_evicts_the_oldest_ended_but_never_an_active_one() -> None:
    with running_server("--keep-finished", "3") as server, server.client() as client:
        sleeper = post(client, "/bin/sleep", "300")["id"]
        ended = [wait_for_status(client, post(client, "/bin/true")["id"])["id"] for _ in range(6)]
        listed = ids_of(client)
        assert listed == [sleeper, *ended[-3:]]
        assert client.get(f"/payloads/{ended[0]}").status_code == 404
        client.post(f"/payloads/{sleeper}/cancel")
        # The cancelled sleeper is now the newest ended payload: the oldest `true` goes.
        # The list stays in creation order.
        assert ids_of(client) == [sleeper, *ended[-2:]]


def test_keep_for_evicts_by_age() -> None:
    with running_server("--keep-for", "0.5") as server, server.client() as client:
        first = wait_for_status(client, post(client, "/bin/true")["id"])["id"]
        sleeper = post(client, "/bin/sleep", "300")["id"]
        wait_until(lambda: client.get(f"/payloads/{first}").status_code == 404, 10, "eviction")
        assert client.get(f"/payloads/{sleeper}").json()["status"] == "working"
        client.post(f"/payloads/{sleeper}/cancel")


def test_list_filters_and_pages(client: httpx.Client) -> None:
    tagged = [post(client, "/bin/true", labels={"batch": "b1", "n": str(i)}) for i in range(5)]
    for record in tagged:
        wait_for_status(client, record["id"])
    failed = post(client, "/no/such/cmd", labels={"batch": "b1"})
    wait_for_status(client, failed["id"])
    sleeper = post(client, "/bin/sleep", "300", labels={"batch": "b1"})
    wait_for_status(client, sleeper["id"], "working")
    everything = ids_of(client)
    assert len(everything) == len(client.get("/payloads").json())

    batch = ids_of(client, label="batch=b1")
    assert batch == [r["id"] for r in tagged] + [failed["id"], sleeper["id"]]
    both = client.get("/payloads", params=[("label", "batch=b1"), ("label", "n=3")]).json()
    assert [r["id"] for r in both] == [tagged[3]["id"]]
    errors = client.get("/payloads", params=[("label", "batch=b1"), ("status", "error")]).json()
    assert [r["id"] for r in errors] == [failed["id"]]
    several = client.get(
        "/payloads", params=[("label", "batch=b1"), ("status", "error"), ("status", "working")]
    ).json()
    assert [r["id"] for r in several] == [failed["id"], sleeper["id"]]
    assert ids_of(client, label="batch=b1", order="desc") == batch[::-1]

    pages: list[str] = []
    url: str | None = "/payloads?label=batch%3Db1&limit=3"
    while url:
        response = client.get(url)
        pages += [r["id"] for r in response.json()]
        link = response.headers.get("link")
        match = re.fullmatch(r'<([^>]+)>; rel="next"', link) if link else None
        url = match.group(1) if match else None
    assert pages == batch
    client.post(f"/payloads/{sleeper['id']}/cancel")


def test_bad_list_queries_are_422(client: httpx.Client) -> None:
    for params in ({"status": "nope"}, {"label": "novalue"}, {"limit": "0"}, {"order": "up"}):
        response = client.get("/payloads", params=params)
        assert response.status_code == 422, params
        assert response.headers["content-type"] == "application/problem+json"
    assert client.get("/payloads", params={"after": "0" * 32}).status_code == 404


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_memory_stays_flat_over_20000_payloads() -> None:
    with running_server("--keep-finished", "2000") as server:
        with server.client() as client:

            def settled() -> bool:
                records = client.get("/payloads").json()
                return len(records) == 2000 and all(is_terminal(r) for r in records)

            rss = []
            for _ in range(2):
                assert post_many(server.port, b'{"cmd": "/bin/true"}', 10_000) == 10_000
                # A bound for a failing run, not a speed check: 10,000 spawns take minutes
                # on two cores shared with other work.
                wait_until(settled, 240, "the payloads to end")
                rss.append(server_rss(server.pid))
        # 10,000 more payloads came and went: memory grew by at most a small margin.
        assert rss[1] < rss[0] * 1.15, rss
