"""The Python client against a real server, and its parsing through httpx.MockTransport."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import httpx
import pytest

from pericles import errors
from pericles.client import (
    AlreadyTerminal,
    AmbiguousId,
    AsyncClient,
    Client,
    FollowItem,
    NotFound,
    OutputChunk,
    ServerUnreachable,
    StatusChange,
    StillActive,
    Unauthorized,
    Unavailable,
)
from pericles.model import PayloadSpec
from tests.helpers import Server


@pytest.fixture
def pericles(server: Server) -> Client:
    with Client(server.url) as client:
        return client


def test_create_wait_and_output(server: Server) -> None:
    with Client(server.url) as client:
        record = client.create("/bin/sh", ["-c", "echo out; echo err >&2; exit 3"])
        assert record.status == "pending"
        assert client.get(record.id).id == record.id
        ended = client.wait(record.id, timeout=10)
        assert (ended.status, ended.exit_code) == ("finished", 3)
        assert client.output(record.id, "stdout").text == "out\n"
        assert client.output(record.id, "stderr").next_offset == 4


def test_create_takes_a_spec_with_its_fields(server: Server) -> None:
    spec = PayloadSpec(cmd="/bin/sh", params=["-c", "echo $GREETING"], env={"GREETING": "hi"})
    with Client(server.url) as client:
        record = client.wait(client.create(spec).id, timeout=10)
        assert client.output(record.id).text == "hi\n"
        assert record.env == {"GREETING": "hi"}


def test_list_reads_every_page(server: Server) -> None:
    tag = uuid.uuid4().hex
    with Client(server.url) as client:
        made = [client.create("/bin/true", labels={"t": tag}).id for _ in range(5)]
        assert [r.id for r in client.list(labels={"t": tag}, page_size=2)] == made
        newest = client.list(labels={"t": tag}, order="desc", limit=3, page_size=2)
        assert [r.id for r in newest] == made[::-1][:3]


def test_follow_yields_output_in_order_then_the_end(server: Server) -> None:
    with Client(server.url) as client:
        record = client.create("/bin/sh", ["-c", "echo a; echo b >&2; echo c; exit 4"])
        items = list(client.follow(record.id))
    chunks = [(i.stream, i.text) for i in items if isinstance(i, OutputChunk)]
    assert "".join(t for s, t in chunks if s == "stdout") == "a\nc\n"
    assert "".join(t for s, t in chunks if s == "stderr") == "b\n"
    last = items[-1]
    assert isinstance(last, StatusChange)
    assert (last.record.status, last.record.exit_code) == ("finished", 4)


def test_server_errors_are_the_servers_exception_classes(server: Server) -> None:
    with Client(server.url) as client:
        with pytest.raises(errors.PayloadNotFound) as missing:
            client.get("0" * 32)
        assert isinstance(missing.value, NotFound)
        assert missing.value.status == 404
        assert missing.value.problem["type"] == "/problems/payload-not-found"
        done = client.wait(client.create("/bin/true").id, timeout=10)
        with pytest.raises(errors.AlreadyTerminal) as ended:
            client.cancel(done.id)
        assert isinstance(ended.value, AlreadyTerminal)
        running = client.create("/bin/sleep", ["300"])
        with pytest.raises(StillActive):
            client.delete(running.id)
        client.delete(running.id, force=True)
        with pytest.raises(NotFound):
            client.get(running.id)


def test_resolve_prefixes(server: Server) -> None:
    with Client(server.url) as client:
        ids = [client.create("/bin/true").id for _ in range(17)]
        assert client.resolve(ids[0]) == ids[0]
        everyone = [r.id for r in client.list()]
        unique = next(
            i for i in range(1, 33) if sum(x.startswith(ids[0][:i]) for x in everyone) == 1
        )
        assert client.resolve(ids[0][:unique]) == ids[0]
        # 17 ids over 16 hex digits: two share a first digit.
        first = next(d for d in "0123456789abcdef" if sum(x[0] == d for x in everyone) > 1)
        with pytest.raises(AmbiguousId) as ambiguous:
            client.resolve(first)
        assert ambiguous.value.candidates == sorted(x for x in everyone if x[0] == first)
        with pytest.raises(NotFound):
            client.resolve("zz")


def test_unreachable_server() -> None:
    with Client("http://127.0.0.1:1") as client, pytest.raises(ServerUnreachable) as failed:
        client.get("0" * 32)
    assert "http://127.0.0.1:1" in str(failed.value)


def test_async_client(server: Server) -> None:
    async def scenario() -> tuple[list[FollowItem], list[str], str]:
        async with AsyncClient(server.url) as client:
            record = await client.create("/bin/echo", ["hello"])
            items = [item async for item in client.follow(record.id)]
            ended = await client.wait(record.id)
            newest = [r.id async for r in client.list(order="desc", limit=1)]
            sleeper = await client.create("/bin/sleep", ["300"])
            cancelled = await client.cancel(sleeper.id)
            assert ended.exit_code == 0
            return items, newest, cancelled.status

    items, newest, status = asyncio.run(scenario())
    assert [i.text for i in items if isinstance(i, OutputChunk)] == ["hello\n"]
    assert len(newest) == 1
    assert status == "cancelled"


# -- parsing, through a fake transport ------------------------------------------------------


def _record(**extra: Any) -> dict[str, Any]:
    return {"status": "pending", "cmd": "/bin/true", "params": [], "id": "a" * 32, **extra}


def _mock(handler: Any) -> Client:
    return Client(http=httpx.Client(base_url="http://pericles.test", transport=handler))


def test_token_from_the_environment_is_sent_as_bearer(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str | None] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("Authorization"))
        return httpx.Response(200, json=_record())

    monkeypatch.setenv("PERICLES_TOKEN", "s3cret")
    _mock(httpx.MockTransport(answer)).get("a" * 32)
    assert seen == ["Bearer s3cret"]


def test_unknown_record_fields_from_a_newer_server_are_ignored() -> None:
    answer = httpx.Response(200, json=_record(node="worker-7", exit_code=None))
    record = _mock(httpx.MockTransport(lambda request: answer)).get("a" * 32)
    assert (record.id, record.status) == ("a" * 32, "pending")


def test_error_answers_without_problem_json() -> None:
    bearer = httpx.Response(401, headers={"WWW-Authenticate": "Bearer"})
    with pytest.raises(Unauthorized) as denied:
        _mock(httpx.MockTransport(lambda request: bearer)).get("a" * 32)
    assert denied.value.status == 401
    busy = httpx.Response(
        503, headers={"Retry-After": "7"}, json={"status": 503, "detail": "queue full"}
    )
    with pytest.raises(Unavailable) as full:
        _mock(httpx.MockTransport(lambda request: busy)).create("/bin/true")
    assert (full.value.retry_after, full.value.detail) == (7.0, "queue full")


def test_create_sends_a_seed_shaped_body() -> None:
    bodies: list[Any] = []

    def answer(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        return httpx.Response(201, json=_record())

    _mock(httpx.MockTransport(answer)).create("/bin/sleep", ["30"])
    assert bodies == [{"cmd": "/bin/sleep", "params": ["30"]}]
