"""One MCP tool per named action: `do_<name>`, the action's argument schema as its input.

The tools are made per request from the catalog the server holds now, not once at start:
the actions file is reloaded on SIGHUP, and a token limited to actions sees only its own.
So they are served by a server middleware (`ActionTools`) rather than registered with the
SDK, whose tools are Python functions with a fixed signature.

Calling one runs the action as `POST /actions/{name}/run` does: `Action.invoke` checks the
arguments and renders the spec, `Service.create` admits it (policy, caps, locks) and
records the action and its arguments; `created_by` is the token's name and the payload
carries `client: mcp`. The answer is `run`'s: a bounded wait, then the exit status and the
head and tail of the output, or the id if it is still running.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import CallToolResult, TextContent, Tool
from starlette.requests import Request

from pericles.actions import Action, Catalog
from pericles.mcp.calls import (
    CLIENT_LABEL,
    DEFAULT_WAIT,
    RUNS,
    caller_from,
    report,
    tool_errors,
)

#: Every action tool's name starts so: no action can take a built-in tool's name, now or
#: when a built-in tool is added, and `do_backup` reads as `pericles do backup` does.
PREFIX = "do_"


def tool_names(catalog: Catalog) -> dict[str, Action]:
    """The action tools' names, each to its action.

    Action names are `[a-z0-9][a-z0-9_.-]*`: MCP allows all of it, but some clients' model
    APIs take no dots, so a dot becomes `_`, unless two actions would then share a name
    (`a.b` and `a_b`): those keep their dots, which MCP's naming rules allow.
    """
    plain = Counter(PREFIX + action.name.replace(".", "_") for action in catalog)
    named: dict[str, Action] = {}
    for action in catalog:
        name = PREFIX + action.name.replace(".", "_")
        named[name if plain[name] == 1 else PREFIX + action.name] = action
    return named


def describe(name: str, action: Action) -> dict[str, Any]:
    """The tool as `tools/list` shows it, in the wire form the middleware chain carries."""
    tool = Tool(
        name=name,
        title=action.title,
        description=action.description or action.title,
        input_schema=action.schema(),
        annotations=RUNS,
    )
    return tool.model_dump(by_alias=True, exclude_none=True, mode="json")


def _error(text: str) -> CallToolResult:
    return CallToolResult(content=[TextContent(type="text", text=text)], is_error=True)


class ActionTools:
    """Server middleware: lists the caller's action tools after the built-in ones, and
    answers calls to them. Which scope they need is `ScopeGate`'s business (outside)."""

    async def __call__(
        self, ctx: ServerRequestContext[Any, Any], call_next: CallNext
    ) -> HandlerResult:
        if ctx.method not in ("tools/list", "tools/call") or not isinstance(ctx.request, Request):
            return await call_next(ctx)
        visible = self._visible(ctx.request)
        if ctx.method == "tools/list":
            result = await call_next(ctx)
            if not isinstance(result, dict):
                return result
            added = [describe(name, action) for name, action in visible.items()]
            return {**result, "tools": [*result.get("tools", []), *added]}
        params = ctx.params or {}
        action = visible.get(str(params.get("name")))
        if action is None:
            # Not an action tool, or one this token may not know of: the SDK answers it as
            # it answers any unknown tool.
            return await call_next(ctx)
        try:
            return await self._run(ctx, action, params.get("arguments") or {})
        except ToolError as exc:
            return _error(str(exc))

    @staticmethod
    def _visible(request: Request) -> Mapping[str, Action]:
        token = getattr(request.state, "token", None)
        named = tool_names(request.app.state.actions.catalog)
        if token is None:
            return named
        return {name: action for name, action in named.items() if token.sees(action.name)}

    @staticmethod
    async def _run(
        ctx: ServerRequestContext[Any, Any], action: Action, arguments: Any
    ) -> CallToolResult:
        caller = caller_from(ctx)
        with tool_errors():
            spec, invocation = action.invoke(arguments, labels=dict([CLIENT_LABEL]))
            record = await caller.service.create(spec, None, caller.name, invocation)
            record = await caller.service.wait(record.id, DEFAULT_WAIT)
            return await report(caller, record)
