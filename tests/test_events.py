"""Server-Sent Events: a payload's status and output, resumable; the feed of all payloads."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from tests.cluster import WITH_CLUSTER
from tests.helpers import Server, SSEvent, post, release, sse_events, wait_for_status

STORES = WITH_CLUSTER


def stream_events(client: httpx.Client, url: str, **headers: str) -> Iterator[SSEvent]:
    with client.stream("GET", url, headers=headers) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        yield from sse_events(response.iter_lines())


def test_status_and_output_arrive_live_and_the_stream_ends(
    client: httpx.Client, tmp_path: Path
) -> None:
    fifo = tmp_path / "gate"
    os.mkfifo(fifo)
    script = 'echo one; echo two >&2; read x < "$0"; echo three'
    record = post(client, "/bin/sh", "-c", script, str(fifo))
    events = stream_events(client, f"/payloads/{record['id']}/events")
    seen: list[SSEvent] = []
    for event in events:
        seen.append(event)
        outputs = [json.loads(e.data) for e in seen if e.event == "output"]
        if {o["text"] for o in outputs} >= {"one\n", "two\n"}:
            break
    # The process is still waiting on the gate: output came before the end.
    assert wait_for_status(client, record["id"], "working")
    release(fifo)
    seen.extend(events)
    assert seen[0].event == "status"
    assert json.loads(seen[0].data)["id"] == record["id"]
    assert seen[-1].event == "status"
    assert json.loads(seen[-1].data)["status"] == "finished"
    stdout = [json.loads(e.data) for e in seen if e.event == "output"]
    assert [o for o in stdout if o["stream"] == "stdout"] == [
        {"stream": "stdout", "offset": 0, "text": "one\n"},
        {"stream": "stdout", "offset": 4, "text": "three\n"},
    ]
    assert [o for o in stdout if o["stream"] == "stderr"] == [
        {"stream": "stderr", "offset": 0, "text": "two\n"}
    ]
    assert all(e.id for e in seen)


def test_a_finished_payload_replays_its_output_then_ends(client: httpx.Client) -> None:
    done = wait_for_status(client, post(client, "/bin/echo", "hello")["id"])
    events = list(stream_events(client, f"/payloads/{done['id']}/events"))
    assert [e.event for e in events] == ["output", "status"]
    assert json.loads(events[0].data)["text"] == "hello\n"
    assert json.loads(events[1].data) == done


def collect(
    events: Iterator[SSEvent], until_bytes: int | None = None, offset: int = 0
) -> tuple[bytes, str]:
    """Output bytes of stdout from events starting at `offset`, and the last event id seen."""
    body = bytearray()
    last = ""
    for event in events:
        last = event.id or last
        if event.event == "output":
            data = json.loads(event.data)
            assert data["offset"] == offset + len(body)
            body += data["text"].encode()
        if until_bytes is not None and len(body) >= until_bytes:
            break
    return bytes(body), last


def test_resume_by_last_event_id_loses_and_repeats_nothing(
    client: httpx.Client, tmp_path: Path
) -> None:
    # Lines of text arrive while we read; we drop the connection and come back.
    fifo = tmp_path / "gate"
    os.mkfifo(fifo)
    script = 'seq 1 20000; read x < "$0"; seq 20001 40000'
    record = post(client, "/bin/sh", "-c", script, str(fifo))
    url = f"/payloads/{record['id']}/events"
    first, last_id = collect(stream_events(client, url), until_bytes=1000)
    release(fifo)
    resumed = stream_events(client, url, **{"Last-Event-ID": last_id})
    rest, _ = collect(resumed, offset=len(first))
    expected = "".join(f"{i}\n" for i in range(1, 40001)).encode()
    assert hashlib.sha256(first + rest).hexdigest() == hashlib.sha256(expected).hexdigest()


def test_multibyte_characters_are_never_split(client: httpx.Client) -> None:
    # 3000 euro signs (3 bytes each), written by printfs that cut every other one apart.
    script = (
        r"for i in $(seq 1 1000); do printf '\342\202\254\342\202'; printf '\254\342\202\254'; done"
    )
    done = wait_for_status(client, post(client, "/bin/sh", "-c", script)["id"], timeout=30)
    body, _ = collect(stream_events(client, f"/payloads/{done['id']}/events"))
    assert body.decode() == "€" * 3000


def test_bad_last_event_id_is_400(client: httpx.Client) -> None:
    record = post(client, "/bin/true")
    for bad in ("x", "1.2", "1.2.bogus", "-1.0.working"):
        response = client.get(f"/payloads/{record['id']}/events", headers={"Last-Event-ID": bad})
        assert response.status_code == 400, bad
        assert response.headers["content-type"] == "application/problem+json"


# Headers arrive as latin-1: b"\xb2" is "²", a digit to str.isdigit() that int() refuses;
# and int() refuses more than 4,300 digits.
JUNK_IDS = [b"\xb2", b"\xb9\xb2.0.", b"0.\xb3.working", b"9" * 5000, b"1.%s." % (b"9" * 5000)]


def test_junk_last_event_ids_are_400_on_both_feeds(client: httpx.Client) -> None:
    record = post(client, "/bin/true")
    for bad in JUNK_IDS:
        for url in (f"/payloads/{record['id']}/events", "/events"):
            response = client.get(url, headers={b"Last-Event-ID": bad})
            assert response.status_code == 400, (url, bad[:20])
            assert response.headers["content-type"] == "application/problem+json"


def test_events_of_an_unknown_payload_is_404(client: httpx.Client) -> None:
    response = client.get("/payloads/0d111286d6fb4f7ebd7464082bada101/events")
    assert response.status_code == 404


@pytest.mark.slow
def test_two_hundred_clients_follow_one_payload(server: Server, tmp_path: Path) -> None:
    fifo = tmp_path / "gate"
    os.mkfifo(fifo)
    script = 'seq 1 1000; read x < "$0"; seq 1001 2000'
    expected = "".join(f"{i}\n" for i in range(1, 2001)).encode()

    async def follower(client: httpx.AsyncClient, url: str, connected: asyncio.Event) -> bytes:
        body = bytearray()
        async with client.stream("GET", url) as response:
            connected.set()
            lines = response.aiter_lines()
            async for event in _async_events(lines):
                if event.event == "output":
                    body += json.loads(event.data)["text"].encode()
        return bytes(body)

    async def main() -> list[bytes]:
        limits = httpx.Limits(max_connections=210)
        async with httpx.AsyncClient(base_url=server.url, limits=limits, timeout=60) as client:
            response = await client.post(
                "/payloads", json={"cmd": "/bin/sh", "params": ["-c", script, str(fifo)]}
            )
            url = f"/payloads/{response.json()['id']}/events"
            connected = [asyncio.Event() for _ in range(200)]
            tasks = [asyncio.create_task(follower(client, url, c)) for c in connected]
            await asyncio.wait_for(asyncio.gather(*(c.wait() for c in connected)), 60)
            await asyncio.to_thread(release, fifo)
            return await asyncio.gather(*tasks)

    bodies = asyncio.run(main())
    assert len(bodies) == 200
    assert all(body == expected for body in bodies)


async def _async_events(lines: AsyncIterator[str]) -> AsyncIterator[SSEvent]:
    buffered: list[str] = []
    async for line in lines:
        buffered.append(line)
        if not line:
            for event in sse_events(iter(buffered)):
                yield event
            buffered = []


def test_the_feed_carries_every_transition(server: Server, client: httpx.Client) -> None:
    with client.stream("GET", "/events") as response:
        assert response.status_code == 200
        record = post(client, "/bin/true")
        statuses = []
        for event in sse_events(response.iter_lines()):
            data = json.loads(event.data)
            if data["id"] == record["id"]:
                statuses.append((event.id, data["status"]))
            if data["status"] == "finished" and data["id"] == record["id"]:
                break
    assert [s for _, s in statuses] == ["pending", "working", "finished"]
    ids = [int(i or 0) for i, _ in statuses]
    assert ids == sorted(ids)
    # Resuming after the first event gives the rest again.
    with client.stream("GET", "/events", headers={"Last-Event-ID": str(ids[0])}) as response:
        again = []
        for event in sse_events(response.iter_lines()):
            data = json.loads(event.data)
            if data["id"] == record["id"]:
                again.append(data["status"])
            if data["id"] == record["id"] and data["status"] == "finished":
                break
    assert again == ["working", "finished"]


def test_the_feed_filters_by_status(client: httpx.Client) -> None:
    with client.stream("GET", "/events", params={"status": ["error"]}) as response:
        post(client, "/bin/true")
        bad = post(client, "/no/such/program")
        event = next(sse_events(response.iter_lines()))
    data = json.loads(event.data)
    assert data["id"] == bad["id"]
    assert data["status"].startswith("error:start(")


@pytest.mark.parametrize("status", ["bogus", "error:start"])
def test_the_feed_refuses_unknown_statuses(client: httpx.Client, status: str) -> None:
    response = client.get("/events", params={"status": status})
    assert response.status_code == 422


@pytest.mark.parametrize(
    ("data", "complete"),
    [
        (b"", 0),
        (b"abc", 3),
        ("é".encode(), 2),
        ("é".encode()[:1], 0),
        (b"ab" + "€".encode()[:2], 2),
        (b"ab" + "😀".encode()[:3], 2),
        (b"ab" + "😀".encode(), 6),
        (b"\xff", 1),  # never valid: the decoder replaces it
        (b"\x80\x80\x80\x80", 4),
    ],
)
def test_text_is_cut_only_between_characters(data: bytes, complete: int) -> None:
    from pericles.api.sse import complete_utf8

    assert complete_utf8(data) == complete
