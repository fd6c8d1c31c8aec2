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


class Command(typer.core.TyperCommand):
    """Usage and help with arguments as their metavar names them: `ID...`, not `{ID}...`."""

    def get_params(self, ctx: Any) -> list[Any]:
        params = super().get_params(ctx)
        for param in params:
            if type(param) is typer.core.TyperArgument:
                param.__class__ = _Argument
        return params

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
