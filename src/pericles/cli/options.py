"""What every `pericles` command shares: its options, usage lines, server connection and
the one-line report of a client error."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer

from pericles.client import ClientError, Unauthorized

if TYPE_CHECKING:
    from pericles.client import Client


class _Argument(typer.core.TyperArgument):
    def display_type_rich(self, ctx: Any) -> str | None:
        return None  # the metavar says it: "ID...", not "ID... <list[str]>"


class _Plain:
    """Typer's coercion of a parameter, minus pydantic for values that need no converting.

    Typer (>= 0.16) coerces each parameter with a pydantic `TypeAdapter` built on first use:
    importing pydantic and building a dozen adapters is most of the ~0.1 s `run --wait`
    spent before sending anything. A value left out (None) and a string for a `str` or
    `list[str]` parameter, and an int within its bounds for an `int` one (a default), come
    out of those adapters as they went in, so they are handed back here as typer would;
    anything else (text to parse as a number, a value out of bounds, choices, paths) goes
    to typer's own adapter, its checks and messages unchanged.
    """

    def __init__(self, descriptor: Any) -> None:
        self._descriptor = descriptor
        self._typer: Any = None

    def _plain(self, value: Any, multi: bool) -> bool:
        descriptor = self._descriptor
        if descriptor.file_annotation is not None or descriptor.parameter_info.parser:
            return False
        if descriptor.is_path or descriptor.is_choice:
            return False
        if not multi and descriptor.annotation is int and type(value) is int:
            return self._in_bounds(value)
        if not multi:
            return descriptor.annotation is str and type(value) is str
        return (
            descriptor.annotation == list[str]
            and isinstance(value, list | tuple)
            and all(type(item) is str for item in value)
        )

    def _in_bounds(self, value: int) -> bool:
        # Out of bounds (or clamped): typer's adapter, for its message or its clamping.
        info = self._descriptor.parameter_info
        if info.clamp:
            return False
        return (info.min is None or value >= info.min) and (info.max is None or value <= info.max)

    def coerce(self, value: Any, param: Any, ctx: Any) -> Any:
        multi = bool(param.multiple or param.nargs == -1)
        if value is None:
            return () if multi else None
        if self._plain(value, multi):
            return list(value) if multi else value
        if self._typer is None:
            from typer._coercion import build_runtime_param

            self._typer = build_runtime_param(self._descriptor)
        return self._typer.coerce(value, param=param, ctx=ctx)


def _cheap_coercion(params: list[Any]) -> list[Any]:
    for param in params:
        # Only where typer keeps its lazy adapter in this slot; otherwise its own way.
        if getattr(param, "_runtime_param", False) is None and hasattr(param, "type_descriptor"):
            param._runtime_param = _Plain(param.type_descriptor)
    return params


class Group(typer.core.TyperGroup):
    """The `pericles` group: its options coerced as `Command`'s are."""

    def get_params(self, ctx: Any) -> list[Any]:
        return _cheap_coercion(super().get_params(ctx))


class Command(typer.core.TyperCommand):
    """Usage and help with arguments as their metavar names them: `ID...`, not `{ID}...`."""

    def get_params(self, ctx: Any) -> list[Any]:
        params = super().get_params(ctx)
        for param in params:
            if type(param) is typer.core.TyperArgument:
                param.__class__ = _Argument
        return _cheap_coercion(params)

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if not isinstance(param, typer.core.TyperArgument):
                pieces.extend(param.get_usage_pieces(ctx))
                continue
            name = param.metavar or (param.name or "").upper()
            if param.nargs != 1 and not name.endswith("..."):
                name += "..."
            pieces.append(name if param.required else f"[{name}]")
        return pieces


JsonFlag = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON")]
IdArg = Annotated[
    str, typer.Argument(metavar="ID", help="A payload id, or any unique prefix of one")
]
IdsArg = Annotated[
    list[str],
    typer.Argument(metavar="ID...", help="Ids or unique prefixes", show_default=False),
]
_SERVER_HELP = "Server URL [env: PERICLES_URL; default http://127.0.0.1:8000]"
_TOKEN_HELP = "Bearer token [env: PERICLES_TOKEN]"
# The same two options on the group and on every command, so that they work either side of
# the command name; a value given after it wins.
ServerOpt = Annotated[str | None, typer.Option("--server", "-s", metavar="URL", help=_SERVER_HELP)]
TokenOpt = Annotated[str | None, typer.Option("--token", metavar="TOKEN", help=_TOKEN_HELP)]


class Connection:
    """The server and token for this invocation; the client is made when first needed."""

    def __init__(self, ctx: typer.Context, server: str | None, token: str | None) -> None:
        self._ctx = ctx
        self._server = server
        self._token = token
        self._client: Client | None = None

    @property
    def server(self) -> str | None:
        return self._server

    @property
    def token(self) -> str | None:
        return self._token

    def client(self, server: str | None = None, token: str | None = None) -> Client:
        if self._client is None:
            from pericles.client import Client  # with httpx: only for commands that talk

            client = Client(server or self._server, token or self._token)
            self._client = self._ctx.with_resource(client)
        return self._client


def client_of(ctx: typer.Context, server: str | None = None, token: str | None = None) -> Client:
    connection = ctx.find_object(Connection)
    if connection is None:
        raise RuntimeError("the pericles callback did not run")
    return connection.client(server, token)


def report(error: ClientError) -> None:
    """A client error as one line on stderr."""
    message = str(error)
    if isinstance(error, Unauthorized):
        message += " (give a token with --token or PERICLES_TOKEN)"
    print(f"pericles: {message}", file=sys.stderr)
