"""The MCP tools: run, start, status, output, wait, cancel, list and check.

Each tool is a thin adapter over the service's public methods, exactly as the REST routes
are: a payload an agent starts is parsed by `api.payloads.spec_from` and admitted by
`Service.create` (policy, caps, limits, queue) like any other, with `created_by` the token's
name and the label `client: mcp`. What a tool answers the model is bounded
(`--mcp-max-output`, head and tail) and read from the store, where secret values are
already masked. Errors the caller can act on (a refused command, an unknown id) come back
as tool errors: text the model reads, naming the rule or the reason.

Which tools a token may list and call is decided once, by `ScopeGate`, from `TOOL_SCOPES`.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import CallToolResult, TextContent, ToolAnnotations
from pydantic import Field
from starlette.requests import Request

from pericles import __version__
from pericles.api.auth import request_token
from pericles.api.payloads import spec_from
from pericles.api.problems import Problem
from pericles.errors import PericlesError
from pericles.mcp.excerpt import head_and_tail, marker
from pericles.model import MAX_WAIT, ListQuery, Payload, Status
from pericles.service import Service
from pericles.settings import Settings
from pericles.tokens import Scope, Token

#: The label every payload an agent starts carries, so people can find (and filter) them.
CLIENT_LABEL = ("client", "mcp")
#: Seconds `run` waits for the payload to end before answering with its id.
DEFAULT_WAIT = 30.0
LIST_LIMIT = 100

#: The scope each tool needs: the same line as the REST API draws (reading needs `read`,
#: anything that starts or stops a process, or asks the policy, needs `run`).
TOOL_SCOPES: dict[str, Scope] = {
    "run": Scope.RUN,
    "start": Scope.RUN,
    "cancel": Scope.RUN,
    "check": Scope.RUN,
    "status": Scope.READ,
    "output": Scope.READ,
    "wait": Scope.READ,
    "list": Scope.READ,
}

INSTRUCTIONS = """\
Runs commands on this machine as Pericles payloads, under the server's command policy and
limits. Every command is recorded with its output and can be cancelled by a person.
Use `check` to ask whether a command is allowed, `run` to run one and get its exit status
and output (or its id, if it is still running after `wait` seconds), then `wait`, `output`,
`status` or `cancel` with that id. Output is cut to its head and tail; use `output` with an
offset to read the rest."""

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


def caller_of(ctx: Context[Any, Any]) -> Caller:
    request = _request(ctx.request_context)
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


class ScopeGate:
    """Server middleware: a token sees and calls only the tools its scope allows.

    The HTTP endpoint has already checked the token itself (any scope may connect); this
    decides per tool. An unauthenticated server (no tokens) lets every tool through.
    """

    async def __call__(
        self, ctx: ServerRequestContext[Any, Any], call_next: CallNext
    ) -> HandlerResult:
        token = request_token(ctx.request) if isinstance(ctx.request, Request) else None
        if token is None or token.scope is Scope.RUN:
            return await call_next(ctx)
        if ctx.method == "tools/call":
            name = (ctx.params or {}).get("name")
            needed = needed_scope(name)
            if not token.scope.allows(needed):
                text = f"token {token.name!r} has scope {token.scope.value}; {name} needs {needed}"
                return CallToolResult(content=[TextContent(type="text", text=text)], is_error=True)
        result = await call_next(ctx)
        if ctx.method == "tools/list" and isinstance(result, dict):
            # The chain answers the wire form: {"tools": [{"name": ...}, ...], ...}.
            tools = [
                t for t in result.get("tools", []) if token.scope.allows(needed_scope(t["name"]))
            ]
            return {**result, "tools": tools}
        return result


def needed_scope(tool: object) -> Scope:
    """The scope calling `tool` needs; a tool not in the table (a named action) needs run."""
    return TOOL_SCOPES.get(tool, Scope.RUN) if isinstance(tool, str) else Scope.RUN


# -- answers -------------------------------------------------------------------------------


def _facts(record: Payload) -> dict[str, Any]:
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


def _headline(record: Payload) -> str:
    if not record.terminal:
        return (
            f"payload {record.id} is still {record.status} (exit_code none yet): call wait "
            "with this id to wait for it, output to read its output so far, cancel to stop it"
        )
    how = f"exit_code {record.exit_code}, signal {record.signal or 'none'}"
    if record.timeout_reason:
        how += f", timeout ({record.timeout_reason})"
    return f"payload {record.id} ended: status {record.status}, {how}"


def _result(text: str, facts: dict[str, Any], is_error: bool = False) -> CallToolResult:
    return CallToolResult(
        content=[TextContent(type="text", text=text)],
        structured_content=facts,
        is_error=is_error,
    )


async def report(caller: Caller, record: Payload) -> CallToolResult:
    """The record's state and the head and tail of its output (both streams, as read)."""
    data, dropped = await caller.service.read_output(record.id, "both", 0)
    excerpt = head_and_tail(data, caller.settings.mcp_max_output, dropped)
    facts = {**_facts(record), "output": excerpt.text, "output_omitted": excerpt.omitted}
    total = len(data) + dropped
    lines = [_headline(record)]
    if total:
        cut = f"; {excerpt.omitted} bytes omitted, read them with output" if excerpt.omitted else ""
        lines.append(f"output (stdout and stderr as read, {total} bytes{cut}):")
        lines.append(excerpt.text)
    else:
        lines.append("no output")
    return _result("\n".join(lines), facts)


# -- tool arguments --------------------------------------------------------------------------

Cmd = Annotated[str, Field(description="Executable path or bare name (looked up on PATH)")]
Params = Annotated[list[str] | None, Field(description="Arguments after the command")]
Cwd = Annotated[str | None, Field(description="Working directory; must exist")]
Env = Annotated[
    dict[str, str] | None, Field(description="Variables laid over a minimal environment")
]
SecretEnv = Annotated[
    dict[str, str] | None,
    Field(description="Variables whose values are never stored and are masked in output"),
]
Stdin = Annotated[
    str | None,
    Field(description='Text fed to stdin, then closed ("pipe": kept open for the REST API)'),
]
Timeout = Annotated[
    float | None, Field(gt=0, description="Seconds the command may run before it is killed")
]
Labels = Annotated[dict[str, str] | None, Field(description="Free-form tags for the record")]
Wait = Annotated[
    float,
    Field(ge=0, le=MAX_WAIT, description="Seconds to wait for the end before answering"),
]
PayloadId = Annotated[str, Field(description="The payload's id, as run or start answered")]


def _spec_data(
    cmd: str,
    params: list[str] | None,
    cwd: str | None,
    env: dict[str, str] | None,
    secret_env: dict[str, str] | None,
    stdin: str | None,
    timeout: float | None,
    labels: dict[str, str] | None,
) -> dict[str, Any]:
    """A create body, as the REST API would receive it; unset fields stay out of it."""
    given = {
        "cwd": cwd,
        "env": env,
        "secret_env": secret_env,
        "stdin": stdin,
        "timeout": timeout,
    }
    data: dict[str, Any] = {"cmd": cmd, "params": params or []}
    data.update({key: value for key, value in given.items() if value is not None})
    data["labels"] = {**(labels or {}), CLIENT_LABEL[0]: CLIENT_LABEL[1]}
    return data


# -- the tools -----------------------------------------------------------------------------

#: Tools that change nothing (hints for the client, not a permission: see TOOL_SCOPES).
_READ_ONLY = frozenset({"status", "output", "wait", "list", "check"})
_READS = ToolAnnotations(read_only_hint=True, open_world_hint=False)
_RUNS = ToolAnnotations(read_only_hint=False, destructive_hint=True, open_world_hint=True)


async def _create(ctx: Context[Any, Any], data: dict[str, Any]) -> tuple[Caller, Payload]:
    caller = caller_of(ctx)
    with tool_errors():
        spec = spec_from(data)
        record = await caller.service.create(spec, None, caller.name)
    return caller, record


async def tool_run(
    ctx: Context[Any, Any],
    cmd: Cmd,
    params: Params = None,
    cwd: Cwd = None,
    env: Env = None,
    secret_env: SecretEnv = None,
    stdin: Stdin = None,
    timeout: Timeout = None,
    labels: Labels = None,
    wait: Wait = DEFAULT_WAIT,
) -> CallToolResult:
    """Run a command and wait for it: its exit status and the head and tail of its output.

    If it is still running after `wait` seconds, answers its id instead: use `wait`,
    `output` or `cancel` with it. Refused commands come back as errors naming the rule.
    """
    data = _spec_data(cmd, params, cwd, env, secret_env, stdin, timeout, labels)
    caller, record = await _create(ctx, data)
    with tool_errors():
        record = await caller.service.wait(record.id, wait)
        return await report(caller, record)


async def tool_start(
    ctx: Context[Any, Any],
    cmd: Cmd,
    params: Params = None,
    cwd: Cwd = None,
    env: Env = None,
    secret_env: SecretEnv = None,
    stdin: Stdin = None,
    timeout: Timeout = None,
    labels: Labels = None,
) -> CallToolResult:
    """Start a command and answer its id at once, without waiting for it."""
    data = _spec_data(cmd, params, cwd, env, secret_env, stdin, timeout, labels)
    _, record = await _create(ctx, data)
    return _result(f"started payload {record.id} ({record.status})", _facts(record))


async def tool_status(ctx: Context[Any, Any], id: PayloadId) -> CallToolResult:
    """A payload's state: status, exit_code, signal, and how much output it has written."""
    caller = caller_of(ctx)
    with tool_errors():
        record = await caller.service.get(id)
    return _result(_headline(record), _facts(record))


async def tool_wait(
    ctx: Context[Any, Any], id: PayloadId, timeout: Wait = DEFAULT_WAIT
) -> CallToolResult:
    """Wait up to `timeout` seconds for a payload to end; then as `run` answers."""
    caller = caller_of(ctx)
    with tool_errors():
        record = await caller.service.wait(id, timeout)
        return await report(caller, record)


async def tool_output(
    ctx: Context[Any, Any],
    id: PayloadId,
    stream: Literal["both", "stdout", "stderr"] = "both",
    offset: Annotated[int, Field(ge=0, description="Byte offset to read from")] = 0,
    max_bytes: Annotated[
        int | None,
        Field(ge=1, description="Most bytes to answer (default and cap: the server's)"),
    ] = None,
) -> CallToolResult:
    """Read a payload's output from `offset`; `next_offset` says where to read on."""
    caller = caller_of(ctx)
    limit = min(max_bytes or caller.settings.mcp_max_output, caller.settings.mcp_max_output)
    with tool_errors():
        page = await read_page(caller.service, id, stream, offset, limit)
    text = page.text
    if page.dropped:
        text = marker(page.dropped) + text
    facts = {
        "id": id,
        "stream": stream,
        "offset": offset,
        "next_offset": page.next_offset,
        "dropped": page.dropped,
        "more": page.more,
        "data": page.text,
    }
    return _result(text, facts)


async def tool_cancel(ctx: Context[Any, Any], id: PayloadId) -> CallToolResult:
    """Cancel a payload: a pending one never starts, a running one is stopped (TERM, KILL)."""
    caller = caller_of(ctx)
    with tool_errors():
        record = await caller.service.cancel(id)
    return _result(_headline(record), _facts(record))


async def tool_list(
    ctx: Context[Any, Any],
    status: Annotated[
        list[str] | None, Field(description="Only these statuses (e.g. working, finished)")
    ] = None,
    mine: Annotated[
        bool, Field(description="Only payloads this token created, among the newest 100")
    ] = False,
    limit: Annotated[int, Field(ge=1, le=LIST_LIMIT)] = 20,
) -> CallToolResult:
    """The most recent payloads, newest first."""
    caller = caller_of(ctx)
    try:
        statuses = frozenset(Status(value) for value in status or [])
    except ValueError as exc:
        raise ToolError(f"status: {exc}; known: {', '.join(s.value for s in Status)}") from exc
    with tool_errors():
        page = await caller.service.page(
            ListQuery(statuses=statuses, limit=LIST_LIMIT if mine else limit, descending=True)
        )
    records = page.records
    if mine:
        records = [r for r in records if r.created_by == caller.name][:limit]
    lines = [
        f"{r.id} {r.status} exit_code={r.exit_code} {r.cmd} {' '.join(r.params)}" for r in records
    ]
    return _result("\n".join(lines) or "no payloads", {"payloads": [_facts(r) for r in records]})


async def tool_check(
    ctx: Context[Any, Any],
    cmd: Cmd,
    params: Params = None,
    cwd: Cwd = None,
    env: Env = None,
    timeout: Timeout = None,
) -> CallToolResult:
    """Would the server's policy run this command? Starts and stores nothing."""
    caller = caller_of(ctx)
    data = _spec_data(cmd, params, cwd, env, None, None, timeout, None)
    with tool_errors():
        decision = await caller.service.check(spec_from(data))
    facts = {
        "allowed": decision.allowed,
        "rule": decision.rule,
        "reason": decision.reason,
        "exe": decision.exe,
    }
    verdict = "allowed" if decision.allowed else "refused"
    by = f" by rule {decision.rule!r}" if decision.rule else ""
    return _result(f"{verdict}{by}: {decision.reason}", facts)


_TOOLS: dict[str, Callable[..., Awaitable[CallToolResult]]] = {
    "run": tool_run,
    "start": tool_start,
    "status": tool_status,
    "wait": tool_wait,
    "output": tool_output,
    "cancel": tool_cancel,
    "list": tool_list,
    "check": tool_check,
}


def build_server(action_tools: list[Any] | None = None) -> MCPServer[Any]:
    """The MCP server with Pericles' tools; `action_tools` adds one tool per named action.

    Named actions (a server-side catalogue of vetted commands with argument schemas) do
    not exist yet: when they do, each becomes a `mcp.server.mcpserver.tools.Tool` whose
    input schema is the action's argument schema, passed here, and scoped `run` in
    `TOOL_SCOPES`.
    """
    server: MCPServer[Any] = MCPServer(
        "pericles",
        version=__version__,
        instructions=INSTRUCTIONS,
        tools=action_tools,
        middleware=[ScopeGate()],
    )
    for name, fn in _TOOLS.items():
        server.add_tool(fn, name=name, annotations=_READS if name in _READ_ONLY else _RUNS)
    return server


@dataclass(frozen=True, slots=True)
class OutputPage:
    text: str
    next_offset: int
    dropped: int
    more: bool


async def read_page(
    service: Service, payload_id: str, stream: str, offset: int, limit: int
) -> OutputPage:
    """At most `limit` bytes of output from `offset`, and where the next read starts.

    The store may have dropped a middle stretch of a long output. Reading again from
    `offset + limit` tells how many of the kept bytes and how many of the dropped ones lie
    in this window, so offsets stay exact across the gap.
    """
    data, dropped = await service.read_output(payload_id, stream, offset)
    end = offset + dropped + len(data)
    if end - offset <= limit:
        return OutputPage(data.decode("utf-8", "replace"), end, dropped, False)
    rest, rest_dropped = await service.read_output(payload_id, stream, offset + limit)
    kept = len(data) - len(rest)
    if kept == 0 and stream != "both":
        # The window lies inside the stream's one dropped stretch: step over all of it and
        # answer what follows, rather than a page of nothing per window.
        after = await read_page(service, payload_id, stream, offset + dropped, limit)
        return dataclasses.replace(after, dropped=after.dropped + dropped)
    next_offset = offset + limit
    return OutputPage(
        data[:kept].decode("utf-8", "replace"),
        next_offset,
        dropped - rest_dropped,
        next_offset < end,
    )
