"""uvicorn's httptools protocol with bounds on request heads, bodies and connections.

uvicorn bounds headers only for h11 (`h11_max_incomplete_event_size`); with httptools a
client may send headers without end and the server keeps them all, and a connection that
sends nothing, or one header line a minute, is kept open forever: `timeout_keep_alive` only
starts after a first response. This subclass counts the bytes of the request line and
headers as the parser reports them and answers 431 past `max_bytes`, and closes a
connection whose head is not complete within `timeout` seconds.

A client may also send a head announcing a large body and then stall: each such connection
holds a descriptor, and enough of them take every descriptor the server has (payload pipes
included). So a body must be complete within `body_timeout` seconds (else 408), and past
`max_connections` open connections a new one is answered 503 and closed at once.

uvicorn writes a response's head and its body in two `transport.write` calls: two `send`
syscalls, and two wake-ups of the client, for every small JSON answer. Each request's
cycle writes through `HeadHeld`, which keeps the head back until the body's first write
joins it in one, or until the loop's next turn (a stream whose first event comes later).
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


def _problem(status: int, reason: str, slug: str, detail: str, extra: bytes = b"") -> bytes:
    """A whole HTTP response carrying a problem JSON body, closing the connection."""
    body = orjson.dumps(
        {"type": f"/problems/{slug}", "title": reason, "status": status, "detail": detail},
        option=orjson.OPT_APPEND_NEWLINE,
    )
    head = (
        f"HTTP/1.1 {status} {reason}\r\n".encode() + b"content-type: application/problem+json\r\n"
        b"content-length: "
        + str(len(body)).encode()
        + b"\r\n"
        + extra
        + b"connection: close\r\n\r\n"
    )
    return head + body


def _too_large(limit: int) -> bytes:
    return _problem(
        431,
        "Request Header Fields Too Large",
        "headers-too-large",
        f"the request line and headers are over {limit} bytes",
    )


class HeadHeld:
    """The transport of one request's response, holding its first write (the head) back
    to send it with the next one; see the module's docstring."""

    __slots__ = ("_held", "_loop", "_started", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None
        #: The head has come: later writes go straight through, after it.
        self._started = False

    def write(self, data: bytes) -> None:
        if not self._started:
            self._started = True
            self._held = data
            self._loop.call_soon(self._release)
            return
        held, self._held = self._held, None
        self._transport.write(data if held is None else held + data)

    def _release(self) -> None:
        held, self._held = self._held, None
        if held is not None and not self._transport.is_closing():
            self._transport.write(held)

    def close(self) -> None:
        self._release()
        self._transport.close()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class BoundedHeadProtocol(HttpToolsProtocol):
    """Set `max_bytes` and `timeout` on a subclass: see `bounded_head_protocol`."""

    max_bytes = 16 * 1024
    timeout = 10.0
    body_timeout = 30.0
    max_connections = 1 << 30

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_bytes = 0
        self._refused = False
        self._head_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            self._refused = True
            transport.write(_OVER_CAPACITY)
            transport.close()
            return
        # Until the first request's head is in, the connection is on the clock.
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_timer()
        self._disarm_body_timer()
        super().connection_lost(exc)

    def _disarm_body_timer(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def _body_timed_out(self) -> None:
        self._body_timer = None
        cycle = self.cycle
        if self.transport.is_closing():
            return
        if not cycle.response_started:
            self.transport.write(self._late_body)
            # The app reading the body sees the client gone; what it answers goes nowhere.
            cycle.disconnected = True
            cycle.message_event.set()
        self.transport.close()

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
            before = self.cycle
            super().on_headers_complete()
            if self.cycle is not before:  # a new request, not an upgrade
                self.cycle.transport = HeadHeld(self.transport, self.loop)  # type: ignore[assignment]
            # The body, if any, is on the clock until its last byte (on_message_complete).
            self._body_timer = self.loop.call_later(self.body_timeout, self._body_timed_out)

    def on_body(self, body: bytes) -> None:
        if not self._refused:
            super().on_body(body)

    def on_message_complete(self) -> None:
        self._disarm_body_timer()
        if not self._refused:
            super().on_message_complete()

    @property
    def _late_body(self) -> bytes:
        return _problem(
            408,
            "Request Timeout",
            "body-timeout",
            f"the request body was not complete within {self.body_timeout:g} seconds",
        )


_OVER_CAPACITY = _problem(
    503,
    "Service Unavailable",
    "too-many-connections",
    "the server has as many connections open as it takes (--max-connections); retry",
    b"retry-after: 1\r\n",
)


def bounded_head_protocol(
    max_bytes: int,
    timeout: float,
    body_timeout: float = 30.0,
    max_connections: int = 1 << 30,
) -> type[BoundedHeadProtocol]:
    """A protocol class for `uvicorn.Config(http=...)` with these bounds."""
    return type(
        "BoundedHeadProtocol",
        (BoundedHeadProtocol,),
        {
            "max_bytes": max_bytes,
            "timeout": timeout,
            "body_timeout": body_timeout,
            "max_connections": max_connections,
        },
    )
