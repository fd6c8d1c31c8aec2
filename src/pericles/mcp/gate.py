"""Which MCP tools a token may list and call: decided here, once, for every tool.

The same line as the REST API draws: reading needs `read`; anything that starts or stops a
process, or asks the policy, needs `run`. A token limited to named actions reaches only
its action tools, as over REST it reaches only its actions' routes.
"""

from __future__ import annotations

from typing import Any

from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp_types import CallToolResult, TextContent
from starlette.requests import Request

from pericles.api.auth import request_token
from pericles.tokens import Scope, Token

#: The scope each built-in tool needs; any other tool (a named action's) needs `run`.
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


def needed_scope(tool: object) -> Scope:
    """The scope calling `tool` needs; a tool not in the table (a named action) needs run."""
    return TOOL_SCOPES.get(tool, Scope.RUN) if isinstance(tool, str) else Scope.RUN


def refusal(token: Token, tool: object) -> str | None:
    """Why `token` may not call `tool`; None when it may."""
    needed = needed_scope(tool)
    if not token.scope.allows(needed):
        return f"token {token.name!r} has scope {token.scope.value}; {tool} needs {needed}"
    if token.actions is not None and tool in TOOL_SCOPES:
        # Which action tools it sees is `actions.ActionTools`' business: only its own.
        allowed = ", ".join(sorted(token.actions)) or "none"
        return f"token {token.name!r} may only run its actions ({allowed})"
    return None


class ScopeGate:
    """Server middleware: a token sees and calls only the tools `refusal` lets through.

    The HTTP endpoint has already checked the token itself (any scope may connect); this
    decides per tool. An unauthenticated server (no tokens) lets every tool through.
    """

    async def __call__(
        self, ctx: ServerRequestContext[Any, Any], call_next: CallNext
    ) -> HandlerResult:
        token = request_token(ctx.request) if isinstance(ctx.request, Request) else None
        if token is None or (token.scope is Scope.RUN and token.actions is None):
            return await call_next(ctx)
        if ctx.method == "tools/call":
            why = refusal(token, (ctx.params or {}).get("name"))
            if why is not None:
                return CallToolResult(content=[TextContent(type="text", text=why)], is_error=True)
        result = await call_next(ctx)
        if ctx.method == "tools/list" and isinstance(result, dict):
            # The chain answers the wire form: {"tools": [{"name": ...}, ...], ...}.
            tools = [t for t in result.get("tools", []) if refusal(token, t["name"]) is None]
            return {**result, "tools": tools}
        return result
