"""Beyond --max-running payloads wait, highest priority first; beyond --max-pending, 503."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import httpx

from tests.helpers import post, release, running_server, wait_for_status, wait_until


def test_queue_order_positions_and_cancel_while_pending(tmp_path: Path) -> None:
    fifo = tmp_path / "gate"
    os.mkfifo(fifo)
    log = tmp_path / "order"
    with running_server("--max-running", "1") as server, server.client() as client:
        blocker = post(client, "/bin/sh", "-c", 'read x < "$0"', str(fifo))
        wait_for_status(client, blocker["id"], "working")
        names = [("low", -5), ("mid-a", 0), ("high", 10), ("mid-b", 0), ("dropped", 99)]
        ids = {}
        for name, priority in names:
            record = post(
                client, "/bin/sh", "-c", f'echo {name} >> "$0"', str(log), priority=priority
            )
            ids[name] = record["id"]
            assert record["status"] == "pending"
        positions = {
            n: client.get(f"/payloads/{i}").json()["queue_position"] for n, i in ids.items()
        }
        assert positions == {"dropped": 1, "high": 2, "mid-a": 3, "mid-b": 4, "low": 5}
        listed = {r["id"]: r for r in client.get("/payloads", params={"status": "pending"}).json()}
        assert listed[ids["low"]]["queue_position"] == 5
        assert "max-running" in listed[ids["low"]]["pending_reason"]
        cancelled = client.post(f"/payloads/{ids['dropped']}/cancel").json()
        assert cancelled["status"] == "cancelled"
        assert "started_at" not in cancelled
        assert client.get(f"/payloads/{ids['high']}").json()["queue_position"] == 1
        release(fifo)
        for name in ("low", "mid-a", "high", "mid-b"):
            assert wait_for_status(client, ids[name])["status"] == "finished"
        assert log.read_text().split() == ["high", "mid-a", "mid-b", "low"]
        assert "pid" not in client.get(f"/payloads/{ids['dropped']}").json()
        done = client.get(f"/payloads/{ids['low']}").json()
        assert "queue_position" not in done


def test_a_full_queue_answers_503_and_stores_nothing(tmp_path: Path) -> None:
    fifo = tmp_path / "gate"
    os.mkfifo(fifo)
    server = running_server("--max-running", "1", "--max-pending", "2")
    with server as srv, srv.client() as client:
        blocker = post(client, "/bin/sh", "-c", 'read x < "$0"', str(fifo))
        wait_for_status(client, blocker["id"], "working")
        waiting = [post(client, "/bin/true")["id"] for _ in range(2)]
        before = len(client.get("/payloads").json())
        full = client.post("/payloads", json={"cmd": "/bin/true"})
        assert full.status_code == 503
        assert full.headers["content-type"] == "application/problem+json"
        assert int(full.headers["retry-after"]) >= 1
        assert len(client.get("/payloads").json()) == before
        release(fifo)
        for payload_id in waiting:
            assert wait_for_status(client, payload_id)["status"] == "finished"
        assert client.post("/payloads", json={"cmd": "/bin/true"}).status_code == 201


def test_zero_means_no_limit() -> None:
    with running_server("--max-running", "0") as server, server.client() as client:
        ids = [post(client, "/bin/sleep", "30")["id"] for _ in range(10)]
        for payload_id in ids:
            wait_for_status(client, payload_id, "working")
        for payload_id in ids:
            client.post(f"/payloads/{payload_id}/cancel")


def test_idempotent_create_under_concurrent_retries() -> None:
    with running_server() as server:

        async def retries(key: str) -> list[httpx.Response]:
            async with httpx.AsyncClient(base_url=server.url, timeout=30) as ac:
                return await asyncio.gather(
                    *(
                        ac.post(
                            "/payloads",
                            json={"cmd": "/bin/sleep", "params": ["30"]},
                            headers={"Idempotency-Key": key},
                        )
                        for _ in range(20)
                    )
                )

        responses = asyncio.run(retries("order-42"))
        assert {r.status_code for r in responses} == {201}
        ids = {r.json()["id"] for r in responses}
        assert len(ids) == 1
        with server.client() as client:
            sleeps = [r for r in client.get("/payloads").json() if r["cmd"] == "/bin/sleep"]
            assert len(sleeps) == 1
            other = client.post(
                "/payloads", json={"cmd": "/bin/true"}, headers={"Idempotency-Key": "other"}
            )
            assert other.json()["id"] not in ids
            # Once the first payload is forgotten, the key starts a new one.
            (first,) = ids
            client.delete(f"/payloads/{first}", params={"force": "true"})
            again = client.post(
                "/payloads",
                json={"cmd": "/bin/sleep", "params": ["30"]},
                headers={"Idempotency-Key": "order-42"},
            )
            assert again.json()["id"] != first
            client.post(f"/payloads/{again.json()['id']}/cancel")


def test_shutdown_cancels_what_waits(tmp_path: Path) -> None:
    fifo = tmp_path / "gate"
    os.mkfifo(fifo)
    server = running_server("--max-running", "1", "--shutdown-grace", "1")
    with server as srv, srv.client() as client:
        post(client, "/bin/sh", "-c", 'read x < "$0"', str(fifo))
        post(client, "/bin/true")
        wait_until(lambda: len(client.get("/payloads").json()) == 2, 10, "two payloads")
    assert "stopping 1 running payload(s), 1 pending" in srv.log()
