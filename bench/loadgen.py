"""The load generator: N keep-alive HTTP/1.1 connections driven by N asyncio workers.

Two clients speak to the server: `raw`, a minimal HTTP/1.1 client on asyncio streams (one
connection per worker; it only understands Content-Length bodies, which is all our servers
send), and `httpx`, one `httpx.AsyncClient` of one connection per worker. The raw client costs
a fraction of the CPU httpx does, which matters when client and server share two cores.

Every run is bounded both in count and in time.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import resource
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, Literal, Protocol

import httpx
import orjson

from serverproc import HOST, cpu_seconds, system_busy_seconds

TERMINAL = frozenset({"finished", "cancelled", "timeout", "lost"})

ClientKind = Literal["raw", "httpx"]
CLIENT_KINDS: tuple[ClientKind, ...] = ("raw", "httpx")

#: i -> (method, path, body) of the i-th request of a run.
RequestFactory = Callable[[int], tuple[str, str, bytes | None]]
#: Called with each successful response body.
BodySink = Callable[[bytes], None]


class Requester(Protocol):
    async def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        """Send one request; the response's status and body."""
        ...


class HttpError(RuntimeError):
    """The server answered something this client cannot read."""


class RawConnection:
    """One keep-alive HTTP/1.1 connection; requests on it go one at a time."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    @classmethod
    async def open(cls, port: int) -> RawConnection:
        reader, writer = await asyncio.open_connection(HOST, port)
        return cls(reader, writer)

    async def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        if body is None:
            head = f"{method} {path} HTTP/1.1\r\nHost: {HOST}\r\n\r\n"
            self._writer.write(head.encode())
        else:
            head = (
                f"{method} {path} HTTP/1.1\r\nHost: {HOST}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
            )
            self._writer.write(head.encode() + body)
        response = await self._reader.readuntil(b"\r\n\r\n")
        status = int(response[9:12])
        length = _content_length(response)
        return status, await self._reader.readexactly(length)

    async def close(self) -> None:
        self._writer.close()
        await self._writer.wait_closed()


def _content_length(head: bytes) -> int:
    start = head.lower().find(b"\r\ncontent-length:")
    if start < 0:
        raise HttpError(f"response without Content-Length: {head[:200]!r}")
    end = head.index(b"\r\n", start + 2)
    return int(head[start + 17 : end])


class HttpxRequester:
    """A worker's handle on a shared `httpx.AsyncClient`."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self._client = client

    async def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        headers = {} if body is None else {"Content-Type": "application/json"}
        response = await self._client.request(method, path, content=body, headers=headers)
        return response.status_code, response.content


@contextlib.asynccontextmanager
async def connections(kind: ClientKind, port: int, count: int) -> AsyncIterator[list[Requester]]:
    """`count` requesters on the server at `port`, all connected before this yields."""
    if kind == "httpx":
        async with _httpx_clients(port, count) as requesters:
            yield requesters
        return
    raw = await asyncio.gather(*(RawConnection.open(port) for _ in range(count)))
    try:
        yield list(raw)
    finally:
        await asyncio.gather(*(conn.close() for conn in raw), return_exceptions=True)


@contextlib.asynccontextmanager
async def _httpx_clients(port: int, count: int) -> AsyncIterator[list[Requester]]:
    # One client of one connection per worker: a single client's pool of 32 connections
    # measured four times slower here (httpcore's pool bookkeeping grows with its size).
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    base = f"http://{HOST}:{port}"
    async with contextlib.AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(
                httpx.AsyncClient(base_url=base, limits=limits, timeout=30.0)
            )
            for _ in range(count)
        ]
        requesters: list[Requester] = [HttpxRequester(client) for client in clients]
        # Connect now, so that timed runs do not pay for it.
        await asyncio.gather(*(r.request("GET", "/healthz") for r in requesters))
        yield requesters


@dataclasses.dataclass
class RunResult:
    """What a run did: requests answered with the expected status, others, and its CPU use."""

    ok: int = 0
    failed: int = 0
    #: Answers with the `retry_on` status, each retried.
    retried: int = 0
    #: When the first request went out: `time.perf_counter()` and `time.time()`.
    started: float = 0.0
    wall_started: float = 0.0
    first_failure: str = ""
    elapsed: float = 0.0
    client_cpu: float = 0.0
    server_cpu: float = 0.0
    server_children_cpu: float = 0.0
    #: CPU the whole machine used during the run, all cores together.
    system_cpu: float = 0.0

    @property
    def rate(self) -> float:
        return self.ok / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def per_server_cpu(self) -> float:
        """Requests per CPU second of the server: steadier than the rate on a busy machine."""
        return self.ok / self.server_cpu if self.server_cpu > 0 else 0.0

    def cpu_summary(self) -> str:
        """CPU use as a share of one core over the run."""
        if self.elapsed <= 0:
            return ""
        ours = self.server_cpu + self.server_children_cpu + self.client_cpu
        other = max(0.0, self.system_cpu - ours)
        return (
            f"cpu: server {self.server_cpu / self.elapsed:.0%}"
            f" (+children {self.server_children_cpu / self.elapsed:.0%}),"
            f" client {self.client_cpu / self.elapsed:.0%},"
            f" other processes {other / self.elapsed:.0%} of one core"
        )


@dataclasses.dataclass
class _Cursor:
    next: int = 0


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def drive(
    requesters: list[Requester],
    make: RequestFactory,
    *,
    count: int,
    seconds: float,
    expect: int = 200,
    sink: BodySink | None = None,
    server_pid: int | None = None,
    retry_on: int | None = None,
    retry_delay: float = 0.25,
) -> RunResult:
    """Send up to `count` requests, for at most `seconds`, one worker per requester.

    A response with status `retry_on` (say 503, the queue is full) is retried after
    `retry_delay` seconds, until the run's time is up.
    """
    result = RunResult()
    cursor = _Cursor()
    stop = time.perf_counter() + seconds

    async def worker(requester: Requester) -> None:
        while cursor.next < count and time.perf_counter() < stop:
            method, path, body = make(cursor.next)
            cursor.next += 1
            status, data = await requester.request(method, path, body)
            while status == retry_on and time.perf_counter() < stop:
                result.retried += 1
                await asyncio.sleep(retry_delay)
                status, data = await requester.request(method, path, body)
            if status == expect:
                result.ok += 1
                if sink is not None:
                    sink(data)
            else:
                result.failed += 1
                result.first_failure = result.first_failure or f"{status} {data[:200]!r}"

    server_before = cpu_seconds(server_pid) if server_pid else (0.0, 0.0)
    client_before = own_cpu()
    system_before = system_busy_seconds()
    result.wall_started = time.time()
    result.started = started = time.perf_counter()
    # A request in flight at `stop` may still take a while; past this the run is broken.
    async with asyncio.timeout(seconds + 30.0):
        await asyncio.gather(*(worker(requester) for requester in requesters))
    result.elapsed = time.perf_counter() - started
    result.client_cpu = own_cpu() - client_before
    result.system_cpu = system_busy_seconds() - system_before
    if server_pid:
        own, reaped = cpu_seconds(server_pid)
        result.server_cpu = own - server_before[0]
        result.server_children_cpu = reaped - server_before[1]
    return result


# --- Pericles requests ---------------------------------------------------------------------


def is_terminal(status: str) -> bool:
    return status in TERMINAL or status.startswith("error:")


def create_request(_: int) -> tuple[str, str, bytes | None]:
    return "POST", "/payloads", b'{"cmd": "/bin/true", "params": []}'


async def list_records(requester: Requester) -> list[dict[str, Any]]:
    status, body = await requester.request("GET", "/payloads")
    if status != 200:
        raise RuntimeError(f"GET /payloads answered {status}: {body[:200]!r}")
    records: list[dict[str, Any]] = orjson.loads(body)
    return records


# Payloads not ended yet, at most one: a cheap question where a full listing of thousands of
# records costs the server tens of milliseconds. A server without these filters ignores them
# and lists everything, which answers the same question, only slower.
_ACTIVE = "/payloads?status=pending&status=working&status=paused&limit=1"


async def wait_none_active(requester: Requester, within: float, interval: float = 0.05) -> float:
    """Poll until no payload is pending or running; when the answer that showed it arrived."""
    deadline = time.perf_counter() + within
    path = _ACTIVE
    while time.perf_counter() < deadline:
        status, body = await requester.request("GET", path)
        seen = time.perf_counter()
        if status != 200:  # filters this server refuses: list everything instead
            path = "/payloads"
            continue
        records: list[dict[str, Any]] = orjson.loads(body)
        if all(is_terminal(record["status"]) for record in records):
            return seen
        await asyncio.sleep(interval)
    raise TimeoutError(f"payloads still active after {within:.0f}s")


async def wait_all_terminal(
    requester: Requester, expected: int, within: float
) -> tuple[float, list[dict[str, Any]]]:
    """Wait until `expected` records are listed by `GET /payloads`, all terminal.

    Returns when the poll that showed none active arrived (perf_counter), and the records.
    """
    deadline = time.perf_counter() + within
    while time.perf_counter() < deadline:
        seen = await wait_none_active(requester, deadline - time.perf_counter())
        records = await list_records(requester)
        if len(records) >= expected and all(is_terminal(r["status"]) for r in records):
            return seen, records
    raise TimeoutError(f"records not all terminal after {within:.0f}s")


def check_run(what: str, result: RunResult, wanted: int | None = None) -> None:
    if result.failed:
        raise RuntimeError(
            f"{what}: {result.failed} requests failed, first: {result.first_failure}"
        )
    if wanted is not None and result.ok != wanted:
        raise RuntimeError(f"{what}: only {result.ok} of {wanted} requests done in time")
