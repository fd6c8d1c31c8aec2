"""`pericles`: run, watch and manage payloads on a Pericles server from a terminal.

Every command but `serve` talks to the server through `pericles.client.Client` only.
Errors become one line on stderr, `pericles: <what went wrong>`, and an exit code from
`pericles.cli.exitcodes`; never a traceback. `--server` and `--token` go before or after
the command name (`pericles --server URL ls`, `pericles ls --server URL`).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from pericles import __version__
from pericles.cli import actions, exitcodes
from pericles.cli.worker import worker
from pericles.client import (
    AlreadyTerminal,
    ClientError,
    SpecNotValid,
    StillActive,
    Unauthorized,
)
from pericles.errors import FieldError

if TYPE_CHECKING:
    from pericles.client import Client, StreamName
    from pericles.model import Payload


class _Argument(typer.core.TyperArgument):
    def display_type_rich(self, ctx: Any) -> str | None:
        return None  # the metavar says it: "ID...", not "ID... <list[str]>"


class _Command(typer.core.TyperCommand):
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


app = typer.Typer(
    name="pericles",
    help="Run processes on a Pericles server and watch them, as if they ran here.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

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


def _client(ctx: typer.Context, server: str | None = None, token: str | None = None) -> Client:
    connection = ctx.find_object(Connection)
    if connection is None:
        raise RuntimeError("the pericles callback did not run")
    return connection.client(server, token)


def _version(value: bool) -> None:
    if value:
        print(f"pericles {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    ctx: typer.Context,
    server: ServerOpt = None,
    token: TokenOpt = None,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version"),
    ] = False,
) -> None:
    ctx.obj = Connection(ctx, server, token)


@app.command(
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    add_help_option=False,
)
def serve(ctx: typer.Context) -> None:
    """Run a Pericles server: the same as `handler-serve` (see `pericles serve --help`)."""
    from pericles.cli.serve import main as serve_main

    serve_main(list(ctx.args))


app.command()(worker)


def _pairs(values: list[str], option: str) -> dict[str, str]:
    pairs = {}
    for value in values:
        key, sep, rest = value.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{value!r} is not KEY=VALUE", param_hint=option)
        pairs[key] = rest
    return pairs


def _stdin_text(source: str) -> str:
    data = sys.stdin.buffer.read() if source == "-" else Path(source).read_bytes()
    try:
        return data.decode()
    except UnicodeDecodeError as exc:
        raise typer.BadParameter("must be UTF-8 text", param_hint="--stdin") from exc


RUN_HELP = """Start CMD with ARGS on the server and print its id.

With --wait, stream its stdout to stdout and its stderr to stderr while it runs, then exit
with its exit code: 128+N when signal N ended it, 124 on timeout, 127 when it could not be
started, 130 when cancelled. Ctrl-C while waiting cancels it on the server, then exits 130.
Put -- before CMD when CMD or ARGS start with a dash.
"""


@app.command(cls=_Command, help=RUN_HELP, context_settings={"allow_interspersed_args": False})
def run(
    ctx: typer.Context,
    command: Annotated[
        list[str],
        typer.Argument(
            metavar="CMD [ARGS]...",
            help="The command (a path, or a name on the server's PATH) and its arguments",
            show_default=False,
        ),
    ],
    wait: Annotated[
        bool, typer.Option("--wait", "-w", help="Stream its output and exit as it does")
    ] = False,
    timeout: Annotated[
        # No bounds here: the payload model's are the server's, checked before sending.
        float | None,
        typer.Option(metavar="SECONDS", help="Kill it after this many seconds (wall clock)"),
    ] = None,
    env: Annotated[
        list[str] | None,
        typer.Option("--env", "-e", metavar="KEY=VALUE", help="A variable for it, repeatable"),
    ] = None,
    cwd: Annotated[
        str | None, typer.Option(metavar="DIR", help="Its working directory on the server")
    ] = None,
    stdin: Annotated[
        str | None,
        typer.Option(metavar="FILE", help="A file (or - for this stdin) to feed its stdin"),
    ] = None,
    label: Annotated[
        list[str] | None, typer.Option(metavar="KEY=VALUE", help="A tag, repeatable")
    ] = None,
    server: ServerOpt = None,
    token: TokenOpt = None,
) -> None:
    for given in command:
        try:
            given.encode()
        except UnicodeEncodeError:
            raise typer.BadParameter(f"{given!r} is not valid UTF-8", param_hint="CMD") from None
    fields: dict[str, Any] = {}
    if env:
        fields["env"] = _pairs(env, "--env")
    if label:
        fields["labels"] = _pairs(label, "--label")
    if stdin is not None:
        fields["stdin"] = _stdin_text(stdin)
    if timeout is not None:
        fields["timeout"] = timeout
    if cwd is not None:
        fields["cwd"] = cwd
    client = _client(ctx, server, token)
    if not wait:
        print(client.create(command[0], command[1:], **fields).id)
        return
    raise typer.Exit(
        _create_and_attach(client, lambda: client.create(command[0], command[1:], **fields))
    )


def _exit_as(record: Any) -> int:
    """The exit code for how it ended; a line on stderr unless it exited by itself."""
    line = exitcodes.ending(record)
    if line:
        print(f"pericles: {line}", file=sys.stderr)
    return exitcodes.for_record(record)


def _create_and_attach(client: Client, create: Callable[[], Payload]) -> int:
    """Create a payload with `create`, then follow it to its end; Ctrl-C cancels it.

    A Ctrl-C while it is being created is kept for after: the server may have made it
    already, and only its id lets us cancel it. A second Ctrl-C gives up at once.
    """
    interrupted: list[int] = []

    def hold(signum: int, frame: object) -> None:
        if interrupted:
            raise KeyboardInterrupt
        interrupted.append(signum)

    previous = signal.signal(signal.SIGINT, hold)
    try:
        payload_id = create().id
    finally:
        signal.signal(signal.SIGINT, previous)
    try:
        if interrupted:
            raise KeyboardInterrupt
        from pericles.cli.attach import attach  # in the try: a Ctrl-C here cancels too

        return _exit_as(attach(client, payload_id))
    except KeyboardInterrupt:
        _cancel_quietly(client, payload_id)
        return exitcodes.cancelled()
    except BrokenPipeError:
        # Whoever read our stdout is gone: end the payload as a local one would end by
        # SIGPIPE, and keep Python from failing again when it flushes stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        _cancel_quietly(client, payload_id)
        return exitcodes.BROKEN_PIPE


def _cancel_quietly(client: Client, payload_id: str) -> None:
    # AlreadyTerminal: it ended by itself meanwhile. A second Ctrl-C: stop waiting for it.
    with contextlib.suppress(AlreadyTerminal, KeyboardInterrupt):
        client.cancel(payload_id)


@app.command("ls", cls=_Command)
def list_payloads(
    ctx: typer.Context,
    status: Annotated[
        list[str] | None,
        typer.Option("--status", metavar="STATUS", help="Only this status; repeatable"),
    ] = None,
    limit: Annotated[int, typer.Option(metavar="N", help="Show the newest N", min=1)] = 20,
    show_all: Annotated[bool, typer.Option("--all", "-a", help="Show every payload")] = False,
    as_json: JsonFlag = False,
    server: ServerOpt = None,
    token: TokenOpt = None,
) -> None:
    """List payloads, newest first."""
    from pericles.cli import render  # rich and the model: only where shown

    records = list(
        _client(ctx, server, token).list(
            status=status or (), order="desc", limit=None if show_all else limit
        )
    )
    if as_json:
        render.print_json([render.record_json(r) for r in records])
    else:
        render.console().print(render.payload_table(records))


@app.command(cls=_Command)
def show(
    ctx: typer.Context,
    payload_id: IdArg,
    as_json: JsonFlag = False,
    server: ServerOpt = None,
    token: TokenOpt = None,
) -> None:
    """Show one payload's record."""
    from pericles.cli import render  # rich and the model: only where shown

    client = _client(ctx, server, token)
    record = client.get(client.resolve(payload_id))
    if as_json:
        render.print_json(render.record_json(record))
    else:
        render.console().print(render.payload_fields(record))


@app.command(cls=_Command)
def logs(
    ctx: typer.Context,
    payload_id: IdArg,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing until it ends")] = (
        False
    ),
    stderr: Annotated[bool, typer.Option("--stderr", help="Only its stderr")] = False,
    stdout: Annotated[bool, typer.Option("--stdout", help="Only its stdout")] = False,
    as_json: JsonFlag = False,
    server: ServerOpt = None,
    token: TokenOpt = None,
) -> None:
    """Print a payload's output: its stdout to stdout and its stderr to stderr, as `run
    --wait` does (`2>&1` puts them together), or only one of them to stdout."""
    from pericles.cli import render  # rich and the model: only where shown

    if stderr and stdout:
        raise typer.BadParameter("give --stdout or --stderr, not both")
    client = _client(ctx, server, token)
    full_id = client.resolve(payload_id)
    stream: StreamName = "stderr" if stderr else "stdout" if stdout else "both"
    if follow:
        _follow_logs(client, full_id, stream, as_json)
        return
    if stream == "both" and not as_json:
        # Each stream to its own file: the order across the two is the terminal's to make.
        sys.stdout.write(client.output(full_id, "stdout").text)
        sys.stdout.flush()
        sys.stderr.write(client.output(full_id, "stderr").text)
        return
    output = client.output(full_id, stream)
    if as_json:
        render.print_json(
            {
                "id": full_id,
                "stream": stream,
                "text": output.text,
                "next_offset": output.next_offset,
                "dropped": output.dropped,
            }
        )
    else:
        sys.stdout.write(output.text)


def _follow_logs(client: Client, payload_id: str, stream: StreamName, as_json: bool) -> None:
    from pericles.client import OutputChunk

    for item in client.follow(payload_id):
        if not isinstance(item, OutputChunk) or stream not in ("both", item.stream):
            continue
        if as_json:
            line = {"stream": item.stream, "offset": item.offset, "text": item.text}
            sys.stdout.write(json.dumps(line) + "\n")
        else:
            # Both streams: each to its own file, as `run --wait` writes them.
            target = sys.stderr if stream == "both" and item.stream == "stderr" else sys.stdout
            target.write(item.text)
            target.flush()
            continue
        sys.stdout.flush()


@app.command("wait", cls=_Command)
def wait_payload(
    ctx: typer.Context,
    payload_id: IdArg,
    as_json: JsonFlag = False,
    server: ServerOpt = None,
    token: TokenOpt = None,
) -> None:
    """Wait until a payload ends; exit with its exit code, as `run --wait` does."""
    from pericles.cli import render  # rich and the model: only where shown

    client = _client(ctx, server, token)
    full_id = client.resolve(payload_id)
    spinning = sys.stdout.isatty() and not as_json
    status = render.console(stderr=True).status(f"waiting for {full_id[: render.SHORT_ID]}")
    with status if spinning else nullcontext():
        record = client.wait(full_id)
    if as_json:
        render.print_json(render.record_json(record))
    raise typer.Exit(_exit_as(record))


def _each(client: Client, ids: list[str], action: str) -> None:
    """Do `action` to each payload; report each failure and go on; exit 1 if any failed."""
    failed = 0
    for given in ids:
        full_id = given
        try:
            full_id = client.resolve(given)
            if action == "cancel":
                print(f"{full_id} {client.cancel(full_id).status}")
            else:
                client.delete(full_id, force=action == "force")
                print(full_id)
        except StillActive as exc:
            print(
                f"pericles: payload {full_id} has not ended: cancel it first, or remove it "
                "with rm -f/--force",
                file=sys.stderr,
            )
            failed = failed or exitcodes.for_error(exc)
        except ClientError as exc:
            _report(exc)
            failed = failed or exitcodes.for_error(exc)
    if failed:
        raise typer.Exit(failed)


@app.command(cls=_Command)
def cancel(
    ctx: typer.Context,
    payload_ids: IdsArg,
    server: ServerOpt = None,
    token: TokenOpt = None,
) -> None:
    """Cancel payloads: a pending one never starts, a running one is stopped."""
    _each(_client(ctx, server, token), payload_ids, "cancel")


@app.command(cls=_Command)
def rm(
    ctx: typer.Context,
    payload_ids: IdsArg,
    force: Annotated[bool, typer.Option("--force", "-f", help="Cancel active ones first")] = False,
    server: ServerOpt = None,
    token: TokenOpt = None,
) -> None:
    """Forget ended payloads and their output."""
    _each(_client(ctx, server, token), payload_ids, "force" if force else "delete")


actions.register(app, _client, _create_and_attach)


@app.command("mcp-stdio", cls=_Command)
def mcp_stdio(ctx: typer.Context, server: ServerOpt = None, token: TokenOpt = None) -> None:
    """Speak MCP on stdin/stdout, relayed to the server's /mcp endpoint (handler-serve --mcp).

    For MCP clients that only start local commands. Give a token with --token or
    PERICLES_TOKEN; its scope decides which tools the client sees.
    """
    from pericles.mcp.bridge import main as bridge

    connection = ctx.find_object(Connection)
    bridge(
        server or (connection.server if connection else None),
        token or (connection.token if connection else None),
    )


def _report(error: ClientError) -> None:
    message = str(error)
    if isinstance(error, Unauthorized):
        message += " (give a token with --token or PERICLES_TOKEN)"
    print(f"pericles: {message}", file=sys.stderr)


#: What the user typed for each field of a payload spec, for messages about it.
_SPEC_OPTIONS = {
    "cmd": "CMD",
    "params": "ARGS",
    "env": "--env",
    "labels": "--label",
    "timeout": "--timeout",
    "cwd": "--cwd",
    "stdin": "--stdin",
}


def _invalid(errors: Sequence[FieldError]) -> list[str]:
    """A spec refused before it was sent, one line per problem, named as typed."""
    lines = []
    for error in errors:
        field, _, rest = error.loc.partition(".")
        name = _SPEC_OPTIONS.get(field, field)
        where = f"{name} {rest}".strip() if name else "the payload"
        lines.append(f"{where}: {error.msg}")
    return lines


def main(argv: list[str] | None = None) -> None:
    """The `pericles` console script.

    Typer's standalone mode turns usage errors into exit 2 and Ctrl-C into 130; what is
    left to us are the client's errors, specs it refuses before sending, and local I/O
    errors, as one line each. Anything else is a bug, still told in one line.
    """
    args = sys.argv[1:] if argv is None else argv
    try:
        # Not standalone: usage errors come here, to be one line like every other error.
        code = app(args=args or ["--help"], prog_name="pericles", standalone_mode=False)
    except typer.Abort:  # Ctrl-C or end of input at a prompt
        sys.exit(exitcodes.cancelled())
    except typer.TyperException as exc:
        formatter = getattr(exc, "format_message", None)
        message = formatter() if callable(formatter) else str(exc)
        command = next((a for a in args if a in _COMMANDS), "")
        hint = f"pericles {command} --help".replace("  ", " ")
        print(f"pericles: {message} (see {hint})", file=sys.stderr)
        sys.exit(getattr(exc, "exit_code", exitcodes.USAGE))
    except SpecNotValid as exc:
        for line in _invalid(exc.errors):
            print(f"pericles: {line}", file=sys.stderr)
        sys.exit(exitcodes.for_error(exc))
    except ClientError as exc:
        _report(exc)
        sys.exit(exitcodes.for_error(exc))
    except OSError as exc:  # --stdin FILE unreadable, and the like
        print(f"pericles: {exc}", file=sys.stderr)
        sys.exit(exitcodes.ERROR)
    except Exception as exc:  # a bug: one line, not a traceback, and a way to report it
        print(f"pericles: internal error: {type(exc).__name__}: {exc}", file=sys.stderr)
        sys.exit(exitcodes.ERROR)
    sys.exit(code if isinstance(code, int) else exitcodes.OK)


_COMMANDS = frozenset({"serve", "run", "ls", "show", "logs", "wait", "cancel", "rm"})
