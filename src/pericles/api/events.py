"""Server-Sent Events: one payload's output and status, and the feed of all transitions."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Header, Query
from starlette.responses import Response

from pericles.api.auth import TokenDep, for_limited_tokens
from pericles.api.deps import ServiceDep
from pericles.api.problems import Problem
from pericles.api.render import compact
from pericles.api.sse import HEARTBEAT, SSE_HEADERS, EventStream, complete_utf8, event
from pericles.model import STREAMS, Payload, Piece, Status, next_offset
from pericles.service import Service

router = APIRouter()

HEARTBEAT_SECONDS = 15.0
_SSE_DOC: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/event-stream": {"schema": {"type": "string"}}}}
}


# Empty is allowed, and means "from the start", as a browser's EventSource may send it.
_PAYLOAD_EVENT_ID = rf"^([0-9]+\.[0-9]+\.({'|'.join(s.value for s in Status)})?)?$"


def _record_json(record: Payload) -> bytes:
    return compact(record)


#: An offset or a sequence number in an event id: ASCII digits only (str.isdigit() takes
#: "²" and other digits int() refuses) and short enough for int() and for any real offset.
_NUMBER = re.compile(r"[0-9]{1,18}")


def _number(text: str) -> int | None:
    return int(text) if _NUMBER.fullmatch(text) else None


def _parse_payload_event_id(value: str) -> tuple[dict[str, int], Status | None]:
    """`<stdout offset>.<stderr offset>.<state>`, as our own event ids are written."""
    invalid = Problem(400, "invalid-event-id", f"{value[:64]!r} is not an event id of this stream")
    parts = value.split(".")
    if len(parts) != 3:
        raise invalid
    stdout, stderr = _number(parts[0]), _number(parts[1])
    if stdout is None or stderr is None:
        raise invalid
    try:
        seen = Status(parts[2]) if parts[2] else None
    except ValueError:
        raise invalid from None
    return {"stdout": stdout, "stderr": stderr}, seen


class _PayloadEvents:
    """Turns what `Service.follow` yields into SSE events with resumable ids.

    Output text never ends inside a UTF-8 character: the incomplete bytes are held back and
    sent with the next piece, and ids count only the bytes sent, so a client that resumes
    from an id gets the held bytes again.
    """

    def __init__(self, positions: dict[str, int], seen: Status | None) -> None:
        self.next = dict(positions)
        self.held = dict.fromkeys(STREAMS, b"")
        self.state = seen

    def event_id(self) -> str:
        state = self.state.value if self.state else ""
        return f"{self.next['stdout']}.{self.next['stderr']}.{state}"

    def _emit(self, stream: str, data: bytes) -> bytes:
        body = {
            "stream": stream,
            "offset": self.next[stream],
            "text": data.decode("utf-8", "replace"),
        }
        self.next[stream] = next_offset(self.next[stream], len(data))
        return event("output", orjson.dumps(body), self.event_id())

    def output(self, piece: Piece) -> list[bytes]:
        out = []
        held = self.held[piece.stream]
        if held and piece.offset != next_offset(self.next[piece.stream], len(held)):
            out.append(self._emit(piece.stream, held))  # bytes before a gap: send as they are
            held = b""
        if not held:
            self.next[piece.stream] = piece.offset  # past any dropped bytes
        data = held + piece.data
        size = complete_utf8(data)
        if size:
            out.append(self._emit(piece.stream, data[:size]))
        self.held[piece.stream] = data[size:]
        return out

    def status(self, record: Payload) -> list[bytes]:
        out = []
        if record.terminal:
            for stream in STREAMS:
                if self.held[stream]:
                    out.append(self._emit(stream, self.held[stream]))
                    self.held[stream] = b""
        self.state = record.state
        out.append(event("status", _record_json(record), self.event_id()))
        return out


async def _payload_stream(
    service: Service, payload_id: str, positions: dict[str, int], seen: Status | None
) -> AsyncIterator[bytes]:
    events = _PayloadEvents(positions, seen)
    async for item in service.follow(payload_id, positions, seen, HEARTBEAT_SECONDS):
        if item is None:
            yield HEARTBEAT
        elif isinstance(item, Payload):
            for chunk in events.status(item):
                yield chunk
        else:
            for chunk in events.output(item):
                yield chunk


@router.get(
    "/payloads/{payload_id}/events",
    summary="A payload's status and output as Server-Sent Events",
    response_class=Response,
    responses=_SSE_DOC,
)
async def payload_events(
    payload_id: str,
    service: ServiceDep,
    last_event_id: Annotated[
        str | None,
        Header(
            description="Resume after this event: `<stdout offset>.<stderr offset>.<status>`",
            json_schema_extra={"pattern": _PAYLOAD_EVENT_ID},
        ),
    ] = None,
) -> Response:
    positions, seen = dict.fromkeys(STREAMS, 0), None
    if last_event_id:
        positions, seen = _parse_payload_event_id(last_event_id)
    await service.get(payload_id)  # a 404 now, not in the middle of a stream
    return EventStream(_payload_stream(service, payload_id, positions, seen), headers=SSE_HEADERS)


def _matches(record: Payload, wanted: frozenset[str]) -> bool:
    return not wanted or record.state.value in wanted or record.status in wanted


async def _feed_stream(
    service: Service, after: int, wanted: frozenset[str], actions: frozenset[str] | None
) -> AsyncIterator[bytes]:
    async for item in service.feed.follow(after, HEARTBEAT_SECONDS):
        if item is None:
            yield HEARTBEAT
        elif _matches(item[1], wanted) and (actions is None or item[1].action in actions):
            yield event("status", _record_json(item[1]), str(item[0]))


@router.get(
    "/events",
    summary="Every payload's status transitions as Server-Sent Events",
    response_class=Response,
    responses=_SSE_DOC,
)
@for_limited_tokens
async def all_events(
    service: ServiceDep,
    token: TokenDep,
    status: Annotated[
        list[str] | None, Query(description="Only these statuses; `error` matches every error")
    ] = None,
    last_event_id: Annotated[
        str | None,
        Header(description="Resume after this event", json_schema_extra={"pattern": "^[0-9]*$"}),
    ] = None,
) -> Response:
    wanted = frozenset(status or ())
    unknown = wanted - {s.value for s in Status}
    if unknown:
        raise Problem(422, "invalid-status", f"unknown status: {', '.join(sorted(unknown))}")
    after = service.feed.last
    if last_event_id:
        number = _number(last_event_id)
        if number is None:
            raise Problem(
                400, "invalid-event-id", f"{last_event_id[:64]!r} is not an event id here"
            )
        after = number
    actions = token.actions if token is not None else None
    return EventStream(_feed_stream(service, after, wanted, actions), headers=SSE_HEADERS)
