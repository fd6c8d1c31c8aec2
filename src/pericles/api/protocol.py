"""uvicorn's httptools protocol with bounds on request heads.

uvicorn bounds headers only for h11 (`h11_max_incomplete_event_size`); with httptools a
client may send headers without end and the server keeps them all, and a connection that
sends nothing, or one header line a minute, is kept open forever: `timeout_keep_alive` only
starts after a first response. This subclass counts the bytes of the request line and
headers as the parser reports them and answers 431 past `max_bytes`, and closes a
connection whose head is not complete within `timeout` seconds.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

_REASON = b"Request Header Fields Too Large"


def _too_large(limit: int) -> bytes:
    body = orjson.dumps(
        {
            "type": "/problems/headers-too-large",
            "title": _REASON.decode(),
            "status": 431,
            "detail": f"the request line and headers are over {limit} bytes",
        },
        option=orjson.OPT_APPEND_NEWLINE,
    )
    head = (
        b"HTTP/1.1 431 " + _REASON + b"\r\n"
        b"content-type: application/problem+json\r\n"
        b"content-length: " + str(len(body)).encode() + b"\r\n"
        b"connection: close\r\n\r\n"
    )
    return head + body


class BoundedHeadProtocol(HttpToolsProtocol):
    """Set `max_bytes` and `timeout` on a subclass: see `bounded_head_protocol`."""

    max_bytes = 16 * 1024
    timeout = 10.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_bytes = 0
        self._refused = False
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # Until the first request's head is in, the connection is on the clock.
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_timer()
        super().connection_lost(exc)

    def _arm_head_timer(self) -> None:
        self._disarm_head_timer()
        self._head_timer = self.loop.call_later(self.timeout, self._head_timed_out)

    def _disarm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self.transport.is_closing():
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # the answer is sent and the connection closing: ignore the rest
        super().data_received(data)
        if self._refused and not self.transport.is_closing():
            self.transport.write(_too_large(self.max_bytes))
            self.transport.close()

    def _count(self, size: int) -> bool:
        self._head_bytes += size
        if self._head_bytes > self.max_bytes:
            self._refused = True
        return not self._refused

    def on_message_begin(self) -> None:
        self._head_bytes = 0
        # Pipelined or keep-alive requests: each head gets the full time again.
        if self._head_timer is None:
            self._arm_head_timer()
        super().on_message_begin()

    def on_url(self, url: bytes) -> None:
        if self._count(len(url)):
            super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        # +4 for ": " and CRLF, so the count is what the client actually sent.
        if self._count(len(name) + len(value) + 4):
            super().on_header(name, value)

    # Once refused, the parser may still report the rest of what it was fed: the request
    # must never reach the app with its head cut short.
    def on_headers_complete(self) -> None:
        self._disarm_head_timer()
        if not self._refused:
            super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self._refused:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if not self._refused:
            super().on_message_complete()


def bounded_head_protocol(max_bytes: int, timeout: float) -> type[BoundedHeadProtocol]:
    """A protocol class for `uvicorn.Config(http=...)` with these bounds."""
    return type(
        "BoundedHeadProtocol",
        (BoundedHeadProtocol,),
        {"max_bytes": max_bytes, "timeout": timeout},
    )
