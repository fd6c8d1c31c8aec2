"""The MCP tools: run, start, status, output, wait, cancel, list and check.

Each tool is a thin adapter over the service's public methods, exactly as the REST routes
are: a payload an agent starts is parsed by `api.payloads.spec_from` and admitted by
`Service.create` (policy, caps, limits, queue) like any other, with `created_by` the token's
name and the label `client: mcp`. What a tool answers the model is bounded
(`--mcp-max-output`, head and tail) and read from the store, where secret values are
already masked. Errors the caller can act on (a refused command, an unknown id) come back
as tool errors: text the model reads, naming the rule or the reason.

Which tools a token may list and call is decided once, by `gate.ScopeGate`; the named
actions' tools are `actions.ActionTools`'; what the tools share is in `calls`.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import CallToolResult
from pydantic import Field

from pericles import __version__
from pericles.api.payloads import spec_from
from pericles.mcp.actions import ActionTools
from pericles.mcp.calls import (
    CLIENT_LABEL,
    DEFAULT_WAIT,
    READS,
    RUNS,
    Caller,
    caller_of,
    facts,
    headline,
    report,
    result,
    tool_errors,
)
from pericles.mcp.excerpt import marker
from pericles.mcp.gate import ScopeGate
from pericles.model import MAX_WAIT, ListQuery, Payload, Status
from pericles.service import Service

LIST_LIMIT = 100

INSTRUCTIONS = """\
Runs commands on this machine as Pericles payloads, under the server's command policy and
limits. Every command is recorded with its output and can be cancelled by a person.
Use `check` to ask whether a command is allowed, `run` to run one and get its exit status
and output (or its id, if it is still running after `wait` seconds), then `wait`, `output`,
`status` or `cancel` with that id. Output is cut to its head and tail; use `output` with an
offset to read the rest. Tools named `do_<action>` run the server's named actions, vetted
commands with typed arguments: prefer one when it does what you need."""


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


def _spec_data(cmd: str, labels: dict[str, str] | None = None, **fields: Any) -> dict[str, Any]:
    """A create body, as the REST API would receive it; unset fields stay out of it."""
    data: dict[str, Any] = {"cmd": cmd, "params": fields.pop("params", None) or []}
    data.update({key: value for key, value in fields.items() if value is not None})
    data["labels"] = {**(labels or {}), CLIENT_LABEL[0]: CLIENT_LABEL[1]}
    return data


# -- the tools -----------------------------------------------------------------------------

#: Tools that change nothing (hints for the client, not a permission: see gate.TOOL_SCOPES).
_READ_ONLY = frozenset({"status", "output", "wait", "list", "check"})


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
    fields = {"params": params, "cwd": cwd, "env": env, "secret_env": secret_env, "stdin": stdin}
    caller, record = await _create(ctx, _spec_data(cmd, labels, timeout=timeout, **fields))
    with tool_errors():
        record = await caller.service.wait(record.id, wait)
        return await report(caller, record)


async def tool_start(ctx: Context[Any, Any], **spec: Any) -> CallToolResult:
    """Start a command and answer its id at once, without waiting for it."""
    _, record = await _create(ctx, _spec_data(**spec))
    return result(f"started payload {record.id} ({record.status})", facts(record))


# `start` takes what `run` takes, but `wait`. The SDK makes a tool's input schema from its
# function's signature, so `start` is given `run`'s without `wait`: one list of arguments,
# with their types and descriptions, for both tools.
_RUN = inspect.signature(tool_run, eval_str=True)
vars(tool_start)["__signature__"] = _RUN.replace(
    parameters=[p for name, p in _RUN.parameters.items() if name != "wait"]
)


async def tool_status(ctx: Context[Any, Any], id: PayloadId) -> CallToolResult:
    """A payload's state: status, exit_code, signal, and how much output it has written."""
    caller = caller_of(ctx)
    with tool_errors():
        record = await caller.service.get(id)
    return result(headline(record), facts(record))


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
    content = {
        "id": id,
        "stream": stream,
        "offset": offset,
        "next_offset": page.next_offset,
        "dropped": page.dropped,
        "more": page.more,
        "data": page.text,
    }
    return result(text, content)


async def tool_cancel(ctx: Context[Any, Any], id: PayloadId) -> CallToolResult:
    """Cancel a payload: a pending one never starts, a running one is stopped (TERM, KILL)."""
    caller = caller_of(ctx)
    with tool_errors():
        record = await caller.service.cancel(id)
    return result(headline(record), facts(record))


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
    return result("\n".join(lines) or "no payloads", {"payloads": [facts(r) for r in records]})


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
    data = _spec_data(cmd, params=params, cwd=cwd, env=env, timeout=timeout)
    with tool_errors():
        decision = await caller.service.check(spec_from(data))
    content = {
        "allowed": decision.allowed,
        "rule": decision.rule,
        "reason": decision.reason,
        "exe": decision.exe,
    }
    verdict = "allowed" if decision.allowed else "refused"
    by = f" by rule {decision.rule!r}" if decision.rule else ""
    return result(f"{verdict}{by}: {decision.reason}", content)


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


def build_server() -> MCPServer[Any]:
    """The MCP server with Pericles' tools; the named actions' tools are added per request.

    `ScopeGate` is outermost: it sees the action tools `ActionTools` lists and refuses
    their calls to a read token, as it does the built-in tools that run things.
    """
    server: MCPServer[Any] = MCPServer(
        "pericles",
        version=__version__,
        instructions=INSTRUCTIONS,
        middleware=[ScopeGate(), ActionTools()],
    )
    for name, fn in _TOOLS.items():
        server.add_tool(fn, name=name, annotations=READS if name in _READ_ONLY else RUNS)
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
