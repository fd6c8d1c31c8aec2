"""Server-Sent Events framing, and text that never splits a UTF-8 character."""

from __future__ import annotations

from starlette.responses import StreamingResponse

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
HEARTBEAT = b": keep-alive\n\n"


def event(kind: str, data: bytes, event_id: str | None = None) -> bytes:
    """One SSE event; `data` must hold no newline (compact JSON never does)."""
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {kind}\n".encode() + b"data: " + data + b"\n\n"


def complete_utf8(data: bytes) -> int:
    """Length of the longest prefix of `data` that does not end inside a UTF-8 character.

    Bytes that can never become valid count as complete: the decoder replaces them.
    """
    size = len(data)
    for back in range(1, min(4, size) + 1):
        byte = data[size - back]
        if byte & 0xC0 == 0x80:  # a continuation byte: look further back for the lead
            continue
        if byte & 0xE0 == 0xC0:
            need = 2
        elif byte & 0xF0 == 0xE0:
            need = 3
        elif byte & 0xF8 == 0xF0:
            need = 4
        else:
            return size
        return size if back >= need else size - back
    return size


class EventStream(StreamingResponse):
    media_type = "text/event-stream"
