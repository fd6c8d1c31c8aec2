"""`pericles mcp-stdio`: MCP over stdio, carried to a server's `/mcp` endpoint.

Some MCP clients only start a local command and talk to it over stdin and stdout. This
bridge is that command: it relays each JSON-RPC message, unchanged, between its stdio and
the server's Streamable HTTP endpoint, with the bearer token in every request. It holds no
tools of its own, so the server's tokens, policy and records apply as to any other client.
"""

from __future__ import annotations

import sys

import anyio
import httpx2
from mcp.client.streamable_http import streamable_http_client
from mcp.server.stdio import stdio_server
from mcp.shared._stream_protocols import ReadStream, WriteStream
from mcp.shared.message import SessionMessage

from pericles.client._core import request_headers, resolve_url
from pericles.model import MAX_WAIT

#: Seconds a tool call may take to answer: `run` and `wait` wait up to MAX_WAIT seconds.
_READ_TIMEOUT = MAX_WAIT + 30


def endpoint_url(server: str | None) -> str:
    """The `/mcp` URL of `server` (or `PERICLES_URL`, or the local default)."""
    url = resolve_url(server)
    return url if url.endswith("/mcp") else f"{url}/mcp"


def _note(message: str) -> None:
    # stderr: stdout is the MCP wire. Clients show a server's stderr in their logs.
    print(f"pericles mcp-stdio: {message}", file=sys.stderr, flush=True)


async def _on_response(response: httpx2.Response) -> None:
    if response.status_code in (401, 403):
        await response.aread()
        _note(f"the server answered {response.status_code}: {response.text.strip()}")


async def _relay(
    source: ReadStream[SessionMessage | Exception], sink: WriteStream[SessionMessage]
) -> None:
    async for item in source:
        if isinstance(item, Exception):
            _note(f"dropped a message that could not be read: {item}")
            continue
        await sink.send(item)


async def bridge(server: str | None, token: str | None) -> None:
    """Relay MCP between stdio and the server until stdin closes."""
    url = endpoint_url(server)
    timeout = httpx2.Timeout(30.0, read=_READ_TIMEOUT)
    hooks = {"response": [_on_response]}
    async with (
        httpx2.AsyncClient(
            headers=request_headers(token), timeout=timeout, event_hooks=hooks
        ) as http,
        streamable_http_client(url, http_client=http) as (remote_read, remote_write),
        stdio_server() as (local_read, local_write),
        anyio.create_task_group() as relays,
    ):
        relays.start_soon(_relay, remote_read, local_write)
        # The client closing our stdin ends the session: stop relaying the other way too.
        await _relay(local_read, remote_write)
        relays.cancel_scope.cancel()


def main(server: str | None, token: str | None) -> None:
    anyio.run(bridge, server, token)
