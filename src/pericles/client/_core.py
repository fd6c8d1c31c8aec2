"""What the sync and async clients share: building requests and reading answers.

Each public call is described once here as a `Call` (method, path, query, body, and how to
read the answer); `sync.Client` and `asyncio.AsyncClient` only send it. The loops that need
several requests (pages, long waits, SSE with resumption) keep their state in small objects
here, so each client's loop is a few lines of sending.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar
from urllib.parse import quote

import httpx

from pericles import __version__
from pericles.client import _records
from pericles.client.errors import (
    AmbiguousId,
    NotFound,
    ServerUnreachable,
    SpecNotValid,
    Unavailable,
    problem_error,
)
from pericles.errors import FieldError
from pericles.model import MAX_WAIT, Payload

if TYPE_CHECKING:
    from pericles.model import PayloadSpec

T = TypeVar("T")

DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=10.0)
#: The server sends a heartbeat every 15 s on an SSE stream: a minute of silence means trouble.
STREAM_TIMEOUT = httpx.Timeout(60.0, connect=10.0)
#: A followed stream that breaks this many times in a row without news gives up.
MAX_RECONNECTS = 3

StreamName = Literal["stdout", "stderr", "both"]
Order = Literal["asc", "desc"]

_FULL_ID = re.compile(r"[0-9a-f]{32}")


# -- configuration -------------------------------------------------------------------------


def resolve_url(url: str | None) -> str:
    """`url`, else `PERICLES_URL`, else the seed's local server."""
    return (url or os.environ.get("PERICLES_URL") or DEFAULT_URL).rstrip("/")


def request_headers(token: str | None) -> dict[str, str]:
    """Headers every request carries; the token from the argument, else `PERICLES_TOKEN`."""
    headers = {"User-Agent": f"pericles-client/{__version__}"}
    token = token or os.environ.get("PERICLES_TOKEN")
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return headers


def unreachable(url: httpx.URL | str, exc: httpx.TransportError) -> ServerUnreachable:
    reason = str(exc) or type(exc).__name__
    if isinstance(exc, httpx.TimeoutException):
        reason = f"timed out ({type(exc).__name__})"
    return ServerUnreachable(str(url).rstrip("/"), reason)


# -- reading answers -----------------------------------------------------------------------


payload = _records.payload


def check(response: httpx.Response, payload_id: str = "") -> None:
    """Raise the matching `ProblemError` unless `response` is a success. The body must be read."""
    if response.is_success:
        return
    problem: dict[str, Any] = {"status": response.status_code, "title": response.reason_phrase}
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        problem.update(body)
    elif response.text.strip():
        problem["detail"] = response.text.strip()[:500]
    error = problem_error(response.status_code, problem, payload_id)
    if isinstance(error, Unavailable):
        retry_after = response.headers.get("Retry-After", "")
        error.retry_after = float(retry_after) if retry_after.isdigit() else None
    raise error


def _record(response: httpx.Response) -> Payload:
    return payload(response.json())


def _nothing(response: httpx.Response) -> None:
    return None


@dataclass(frozen=True)
class Page:
    records: list[Payload]
    next_url: str | None


def _page(response: httpx.Response) -> Page:
    records = [payload(item) for item in _records.objects(response.json())]
    return Page(records, response.links.get("next", {}).get("url"))


@dataclass(frozen=True)
class Output:
    """A stream's output from an offset: `text` (invalid UTF-8 replaced), where to read next."""

    text: str
    next_offset: int
    dropped: int


def _output(response: httpx.Response) -> Output:
    headers = response.headers
    return Output(
        response.text,
        int(headers.get("Pericles-Output-Next-Offset", "0")),
        int(headers.get("Pericles-Output-Dropped", "0")),
    )


# -- requests ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Call(Generic[T]):
    """One request and how to read its answer."""

    method: str
    path: str
    read: Callable[[httpx.Response], T]
    params: Sequence[tuple[str, str | int | float | bool]] = ()
    json: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)
    timeout: httpx.Timeout | None = None  # None: the client's own
    payload_id: str = ""  # named in errors about this request


def body_of(
    spec: PayloadSpec | str, params: Sequence[str], fields: Mapping[str, Any]
) -> dict[str, Any]:
    """The body of `POST /payloads`, checked with the payload model before it is sent."""
    body = _records.plain_body(spec, params, fields)
    if body is not None:
        return body
    from pydantic import ValidationError  # with the model: only for specs that need it

    from pericles import validation
    from pericles.model import PayloadSpec

    if isinstance(spec, PayloadSpec):
        if params or fields:
            raise TypeError("give either a PayloadSpec or cmd, params and fields, not both")
        return _records.spec_body(spec)
    try:
        valid = PayloadSpec.model_validate({"cmd": spec, "params": list(params), **fields})
    except ValidationError as exc:
        found = [
            FieldError(validation.location(e["loc"]), validation.words(e))
            for e in exc.errors(include_url=False)
        ]
        raise SpecNotValid(errors=found) from None
    return _records.spec_body(valid)


def create(body: dict[str, Any], idempotency_key: str | None) -> Call[Payload]:
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
    return Call("POST", "/payloads", _record, json=body, headers=headers)


def get(payload_id: str) -> Call[Payload]:
    return Call("GET", f"/payloads/{payload_id}", _record, payload_id=payload_id)


def cancel(payload_id: str) -> Call[Payload]:
    return Call("POST", f"/payloads/{payload_id}/cancel", _record, payload_id=payload_id)


def send_signal(payload_id: str, name: str) -> Call[Payload]:
    path = f"/payloads/{payload_id}/signal"
    return Call("POST", path, _record, json={"signal": name}, payload_id=payload_id)


def write_stdin(payload_id: str, data: str | bytes, close: bool) -> Call[None]:
    body: dict[str, Any] = {"close": close}
    if isinstance(data, bytes):
        body["data_base64"] = base64.b64encode(data).decode()
    else:
        body["data"] = data
    return Call("POST", f"/payloads/{payload_id}/stdin", _nothing, json=body, payload_id=payload_id)


def delete(payload_id: str, force: bool) -> Call[None]:
    params = [("force", "true")] if force else []
    return Call("DELETE", f"/payloads/{payload_id}", _nothing, params, payload_id=payload_id)


def _json(response: httpx.Response) -> Any:
    return response.json()


def actions() -> Call[list[dict[str, Any]]]:
    return Call("GET", "/actions", _json)


def action(name: str) -> Call[dict[str, Any]]:
    return Call("GET", f"/actions/{quote(name, safe='')}", _json)


def run_action(name: str, args: Mapping[str, Any], idempotency_key: str | None) -> Call[Payload]:
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
    path = f"/actions/{quote(name, safe='')}/run"
    return Call("POST", path, _record, json={"args": dict(args)}, headers=headers)


def output(payload_id: str, stream: StreamName, offset: int) -> Call[Output]:
    params = [("stream", stream), ("offset", offset)]
    return Call("GET", f"/payloads/{payload_id}/output", _output, params, payload_id=payload_id)


# -- loops over several requests -----------------------------------------------------------


class Pager:
    """`GET /payloads` page after page, following the `Link: rel="next"` header."""

    def __init__(
        self,
        statuses: Iterable[str],
        labels: Mapping[str, str],
        order: Order,
        limit: int | None,
        page_size: int,
    ) -> None:
        params: list[tuple[str, str | int | float | bool]] = [("status", s) for s in statuses]
        params += [("label", f"{k}={v}") for k, v in labels.items()]
        params += [("order", order), ("limit", min(page_size, limit or page_size))]
        self._next: Call[Page] | None = Call("GET", "/payloads", _page, params)
        self._left = limit

    def call(self) -> Call[Page] | None:
        """The next page's request, or None once every page (or `limit` records) was read."""
        return self._next if self._left is None or self._left > 0 else None

    def take(self, page: Page) -> list[Payload]:
        records = page.records if self._left is None else page.records[: self._left]
        if self._left is not None:
            self._left -= len(records)
        self._next = Call("GET", page.next_url, _page) if page.next_url else None
        return records


class Waiter:
    """`GET /payloads/{id}?wait=` again and again until the payload ends or time is up."""

    def __init__(self, payload_id: str, timeout: float | None) -> None:
        self.payload_id = payload_id
        self._deadline = None if timeout is None else time.monotonic() + timeout

    def _remaining(self) -> float:
        return MAX_WAIT if self._deadline is None else self._deadline - time.monotonic()

    def call(self) -> Call[Payload]:
        wait = min(self._remaining(), MAX_WAIT)
        if wait <= 0:
            return get(self.payload_id)
        return dataclasses.replace(
            get(self.payload_id),
            params=[("wait", round(wait, 3) or 0.001)],
            timeout=httpx.Timeout(wait + 30.0, connect=10.0),
        )

    def done(self, record: Payload) -> bool:
        return record.terminal or self._remaining() <= 0


@dataclass(frozen=True)
class OutputChunk:
    """Text a payload wrote to `stream` ("stdout" or "stderr"), from byte `offset` on."""

    stream: str
    text: str
    offset: int


@dataclass(frozen=True)
class StatusChange:
    """The payload's record whenever its status changes; the last one is terminal."""

    record: Payload


FollowItem = OutputChunk | StatusChange


class Follower:
    """Reads `GET /payloads/{id}/events` (SSE) and resumes it with `Last-Event-ID` on a break.

    Feed it the stream's lines; it yields what they mean. The event id holds both streams'
    offsets and the last state, so a resumed stream repeats and skips nothing.
    """

    def __init__(self, payload_id: str) -> None:
        self.payload_id = payload_id
        self.done = False
        self._last_id: str | None = None
        self._failures = 0
        self._event: dict[str, str] = {}
        self._data: list[str] = []

    def call(self) -> Call[None]:
        headers = {"Accept": "text/event-stream"}
        if self._last_id is not None:
            headers["Last-Event-ID"] = self._last_id
        path = f"/payloads/{self.payload_id}/events"
        return Call("GET", path, _nothing, headers=headers, timeout=STREAM_TIMEOUT)

    def feed(self, line: str) -> Iterator[FollowItem]:
        """What one line of the stream (without its line end) completes, if anything."""
        if line:
            if not line.startswith(":"):
                name, _, value = line.partition(":")
                value = value.removeprefix(" ")
                if name == "data":
                    self._data.append(value)
                else:
                    self._event[name] = value
            return
        event, data = self._event, "\n".join(self._data)
        self._event, self._data = {}, []
        if not data:
            return
        self._failures = 0
        if "id" in event:
            self._last_id = event["id"]
        kind = event.get("event", "message")
        if kind == "output":
            body = json.loads(data)
            yield OutputChunk(body["stream"], body["text"], body["offset"])
        elif kind == "status":
            record = payload(json.loads(data))
            self.done = record.terminal
            yield StatusChange(record)

    def broken(self, url: httpx.URL, exc: httpx.TransportError | None) -> None:
        """The stream ended early or broke: raise once it keeps doing so without news."""
        self._event, self._data = {}, []
        self._failures += 1
        if self._failures >= MAX_RECONNECTS:
            if exc is None:
                exc = httpx.RemoteProtocolError("the event stream keeps ending early")
            raise unreachable(url, exc) from exc


# -- ids -----------------------------------------------------------------------------------


def is_full_id(value: str) -> bool:
    return _FULL_ID.fullmatch(value) is not None


def pick(prefix: str, ids: Iterable[str]) -> str:
    """The one id in `ids` that starts with `prefix`, like git resolves a short hash."""
    wanted = prefix.lower()
    matches = sorted(i for i in ids if i.startswith(wanted))
    if len(matches) == 1:
        return matches[0]
    if not matches:
        detail = f"no payload has an id starting with {prefix!r}"
        raise NotFound(404, {"status": 404, "title": "Not Found", "detail": detail}, prefix)
    raise AmbiguousId(prefix, matches)
