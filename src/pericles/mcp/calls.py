"""What every MCP tool shares: who is calling, errors as tool errors, and the answers.

A tool answers the model a `CallToolResult`: text it reads, and the same facts as
structured content (`exit_code`, `signal`, `status` in both). `report` is the answer of
`run`, `wait` and an action tool: the record's state and the head and tail of its output,
bounded by `--mcp-max-output` and read from the store, where secret values are masked.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from mcp.server.context import ServerRequestContext
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import CallToolResult, TextContent, ToolAnnotations
from starlette.requests import Request

from pericles.api.auth import request_token
from pericles.api.problems import Problem
from pericles.errors import PericlesError
from pericles.mcp.excerpt import head_and_tail
from pericles.model import Payload
from pericles.service import Service
from pericles.settings import Settings
from pericles.tokens import Token

#: The label every payload an agent starts carries, so people can find (and filter) them.
CLIENT_LABEL = ("client", "mcp")
#: Seconds `run` (and an action tool) waits for the payload to end before answering its id.
DEFAULT_WAIT = 30.0

#: Hints for the client, not a permission (see `gate.TOOL_SCOPES`).
READS = ToolAnnotations(read_only_hint=True, open_world_hint=False)
RUNS = ToolAnnotations(read_only_hint=False, destructive_hint=True, open_world_hint=True)

# -- who is calling ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Caller:
    service: Service
    settings: Settings
    token: Token | None

    @property
    def name(self) -> str | None:
        return self.token.name if self.token is not None else None


def _request(ctx: ServerRequestContext[Any, Any]) -> Request:
    request = ctx.request
    if not isinstance(request, Request):
        # Only the HTTP endpoint serves these tools: the stdio bridge forwards to it.
        raise ToolError("this server answers MCP over HTTP only")
    return request


def caller_from(ctx: ServerRequestContext[Any, Any]) -> Caller:
    """Who calls, and the service and settings of the app serving the request."""
    request = _request(ctx)
    service: Service | None = getattr(request.app.state, "service", None)
    if service is None:
        raise ToolError("the server is starting or stopping; try again")
    return Caller(service, request.app.state.settings, request_token(request))


@contextlib.contextmanager
def tool_errors() -> Iterator[None]:
    """Errors the caller can act on, as tool errors the model reads."""
    try:
        yield
    except Problem as exc:
        raise ToolError(exc.detail) from exc
    except PericlesError as exc:
        raise ToolError(str(exc)) from exc


def caller_of(ctx: Context[Any, Any]) -> Caller:
    """`caller_from` for a tool function, which the SDK hands its own `Context`."""
    return caller_from(ctx.request_context)


# -- answers -------------------------------------------------------------------------------


def facts(record: Payload) -> dict[str, Any]:
    """A record's state, as every answer about a payload gives it."""
    return {
        "id": record.id,
        "status": record.status,
        "done": record.terminal,
        "exit_code": record.exit_code,
        "signal": record.signal,
        "cmd": record.cmd,
        "params": record.params,
        "created_by": record.created_by,
        "timeout_reason": record.timeout_reason,
        "duration_seconds": record.duration_seconds,
        "stdout_bytes": record.stdout_bytes,
        "stderr_bytes": record.stderr_bytes,
        "queue_position": record.queue_position,
    }


def headline(record: Payload) -> str:
    """One line the model reads first: ended how, or still running and what to do next."""
    if not record.terminal:
        return (
            f"payload {record.id} is still {record.status} (exit_code none yet): call wait "
            "with this id to wait for it, output to read its output so far, cancel to stop it"
        )
    how = f"exit_code {record.exit_code}, signal {record.signal or 'none'}"
    if record.timeout_reason:
        how += f", timeout ({record.timeout_reason})"
    return f"payload {record.id} ended: status {record.status}, {how}"


def result(text: str, content: dict[str, Any], is_error: bool = False) -> CallToolResult:
    """An answer: `text` for the model to read, `content` the same facts as structure."""
    return CallToolResult(
        content=[TextContent(type="text", text=text)],
        structured_content=content,
        is_error=is_error,
    )


async def report(caller: Caller, record: Payload) -> CallToolResult:
    """The record's state and the head and tail of its output (both streams, as read)."""
    data, dropped = await caller.service.read_output(record.id, "both", 0)
    excerpt = head_and_tail(data, caller.settings.mcp_max_output, dropped)
    answer = {**facts(record), "output": excerpt.text, "output_omitted": excerpt.omitted}
    total = len(data) + dropped
    lines = [headline(record)]
    if caller.service.stopping and not record.terminal:
        # The wait ended because the server is stopping, not because the payload did.
        answer["server_stopping"] = True
        lines = [
            f"the server is shutting down, and stops its running payloads: payload "
            f"{record.id} was still {record.status} (exit_code none yet)"
        ]
    if total:
        cut = f"; {excerpt.omitted} bytes omitted, read them with output" if excerpt.omitted else ""
        lines.append(f"output (stdout and stderr as read, {total} bytes{cut}):")
        lines.append(excerpt.text)
    else:
        lines.append("no output")
    return result("\n".join(lines), answer)
