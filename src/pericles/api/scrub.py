"""No problem body quotes a token secret, whatever part of the request carried it.

Problems quote what was wrong with a request (a path, a Host, an origin, a param) and a client
may have put a token in any of them. Rather than each message remembering to leave tokens
out, one ASGI middleware, outermost, rewrites every `application/problem+json` body with
each string's token secrets replaced (`TokenSet.redact`). Other responses pass untouched:
only their start message is looked at. Installed only when the server has tokens.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pericles.api.problems import PROBLEM_MEDIA_TYPE
from pericles.tokens import TokenSet


def _scrubbed(value: Any, tokens: TokenSet) -> Any:
    if isinstance(value, str):
        return tokens.redact(value)
    if isinstance(value, list):
        return [_scrubbed(v, tokens) for v in value]
    if isinstance(value, dict):
        return {tokens.redact(str(k)): _scrubbed(v, tokens) for k, v in value.items()}
    return value


class ScrubProblems:
    def __init__(self, app: ASGIApp, tokens: TokenSet) -> None:
        self.app = app
        self.tokens = tokens

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start: Message | None = None
        body = bytearray()

        async def send_scrubbed(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                content_type = MutableHeaders(raw=message["headers"]).get("content-type", "")
                if content_type.startswith(PROBLEM_MEDIA_TYPE):
                    start = message  # held until the whole (small) body is here
                    return
            elif message["type"] == "http.response.body" and start is not None:
                body.extend(message.get("body", b""))
                if message.get("more_body", False):
                    return
                try:
                    data = orjson.dumps(
                        _scrubbed(orjson.loads(body), self.tokens),
                        option=orjson.OPT_APPEND_NEWLINE,
                    )
                except orjson.JSONDecodeError:  # not ours to parse: scrub it as text
                    data = self.tokens.redact(body.decode("utf-8", "replace")).encode()
                headers = MutableHeaders(raw=start["headers"])
                headers["content-length"] = str(len(data))
                await send(start)
                await send({"type": "http.response.body", "body": data})
                return
            await send(message)

        await self.app(scope, receive, send_scrubbed)
