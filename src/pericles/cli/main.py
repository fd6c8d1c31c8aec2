"""`pericles`: run, watch and manage payloads on a Pericles server from a terminal.

Every command but `serve` talks to the server through `pericles.client.Client` only.
Errors become one line on stderr, `pericles: <what went wrong>`, and an exit code from
`pericles.cli.exitcodes`; never a traceback.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from contextlib import nullcontext
from pathlib import Path
from typing import Annotated, Any

import typer

from pericles.cli import exitcodes, render
from pericles.cli.attach import attach
from pericles.client import (
    AlreadyTerminal,
    Client,
    ClientError,
    OutputChunk,
    StreamName,
    Unauthorized,
)

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

    def client(self) -> Client:
        if self._client is None:
            self._client = self._ctx.with_resource(Client(self._server, self._token))
        return self._client


def _client(ctx: typer.Context) -> Client:
    connection = ctx.find_object(Connection)
    if connection is None:
        raise RuntimeError("the pericles callback did not run")
    return connection.client()


@app.callback()
def _options(
    ctx: typer.Context,
    server: Annotated[
        str | None,
        typer.Option(
            "--server", "-s", help="Server URL [env: PERICLES_URL; default http://127.0.0.1:8000]"
        ),
    ] = None,
    token: Annotated[
        str | None, typer.Option("--token", help="Bearer token [env: PERICLES_TOKEN]")
    ] = None,
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


@app.command(help=RUN_HELP, context_settings={"allow_interspersed_args": False})
def run(
    ctx: typer.Context,
    command: Annotated[list[str], typer.Argument(metavar="CMD [ARGS]...", show_default=False)],
    wait: Annotated[
        bool, typer.Option("--wait", "-w", help="Stream its output and exit as it does")
    ] = False,
    timeout: Annotated[
        # No bounds here: the payload model's are the server's, checked before sending.
        float | None, typer.Option(help="Kill it after this many seconds (wall clock)")
    ] = None,
    env: Annotated[
        list[str] | None, typer.Option("--env", "-e", help="KEY=VALUE for its environment")
    ] = None,
    cwd: Annotated[str | None, typer.Option(help="Its working directory on the server")] = None,
    stdin: Annotated[
        str | None, typer.Option(help="A file (or - for this stdin) to feed its stdin")
    ] = None,
    label: Annotated[list[str] | None, typer.Option(help="KEY=VALUE tag, repeatable")] = None,
) -> None:
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
    client = _client(ctx)
    record = client.create(command[0], command[1:], **fields)
    if not wait:
        print(record.id)
        return
    raise typer.Exit(_attach_or_cancel(client, record.id))


def _attach_or_cancel(client: Client, payload_id: str) -> int:
    try:
        return exitcodes.for_record(attach(client, payload_id))
    except KeyboardInterrupt:
        _cancel_quietly(client, payload_id)
        return exitcodes.CANCELLED
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


@app.command("ls")
def list_payloads(
    ctx: typer.Context,
    status: Annotated[
        list[str] | None, typer.Option("--status", help="Only this status; repeatable")
    ] = None,
    limit: Annotated[int, typer.Option(help="Show the newest N", min=1)] = 20,
    show_all: Annotated[bool, typer.Option("--all", "-a", help="Show every payload")] = False,
    as_json: JsonFlag = False,
) -> None:
    """List payloads, newest first."""
    records = list(
        _client(ctx).list(status=status or (), order="desc", limit=None if show_all else limit)
    )
    if as_json:
        render.print_json([render.record_json(r) for r in records])
    else:
        render.console().print(render.payload_table(records))


@app.command()
def show(ctx: typer.Context, payload_id: IdArg, as_json: JsonFlag = False) -> None:
    """Show one payload's record."""
    client = _client(ctx)
    record = client.get(client.resolve(payload_id))
    if as_json:
        render.print_json(render.record_json(record))
    else:
        render.console().print(render.payload_fields(record))


@app.command()
def logs(
    ctx: typer.Context,
    payload_id: IdArg,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing until it ends")] = (
        False
    ),
    stderr: Annotated[bool, typer.Option("--stderr", help="Only its stderr")] = False,
    stdout: Annotated[bool, typer.Option("--stdout", help="Only its stdout")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Print a payload's output: both streams as the server read them, or one of them."""
    if stderr and stdout:
        raise typer.BadParameter("give --stdout or --stderr, not both")
    client = _client(ctx)
    full_id = client.resolve(payload_id)
    stream: StreamName = "stderr" if stderr else "stdout" if stdout else "both"
    if follow:
        _follow_logs(client, full_id, stream, as_json)
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
    for item in client.follow(payload_id):
        if not isinstance(item, OutputChunk) or stream not in ("both", item.stream):
            continue
        if as_json:
            line = {"stream": item.stream, "offset": item.offset, "text": item.text}
            sys.stdout.write(json.dumps(line) + "\n")
        else:
            sys.stdout.write(item.text)
        sys.stdout.flush()


@app.command("wait")
def wait_payload(ctx: typer.Context, payload_id: IdArg, as_json: JsonFlag = False) -> None:
    """Wait until a payload ends; exit with its exit code, as `run --wait` does."""
    client = _client(ctx)
    full_id = client.resolve(payload_id)
    spinning = sys.stdout.isatty() and not as_json
    status = render.console(stderr=True).status(f"waiting for {full_id[: render.SHORT_ID]}")
    with status if spinning else nullcontext():
        record = client.wait(full_id)
    if as_json:
        render.print_json(render.record_json(record))
    raise typer.Exit(exitcodes.for_record(record))


def _each(ctx: typer.Context, ids: list[str], action: str) -> None:
    """Do `action` to each payload; report each failure and go on; exit 1 if any failed."""
    client = _client(ctx)
    failed = 0
    for given in ids:
        try:
            full_id = client.resolve(given)
            if action == "cancel":
                print(f"{full_id} {client.cancel(full_id).status}")
            else:
                client.delete(full_id, force=action == "force")
                print(full_id)
        except ClientError as exc:
            _report(exc)
            failed = failed or exitcodes.for_error(exc)
    if failed:
        raise typer.Exit(failed)


@app.command()
def cancel(
    ctx: typer.Context,
    payload_ids: Annotated[
        list[str], typer.Argument(metavar="ID...", help="Ids or unique prefixes")
    ],
) -> None:
    """Cancel payloads: a pending one never starts, a running one is stopped."""
    _each(ctx, payload_ids, "cancel")


@app.command()
def rm(
    ctx: typer.Context,
    payload_ids: Annotated[
        list[str], typer.Argument(metavar="ID...", help="Ids or unique prefixes")
    ],
    force: Annotated[bool, typer.Option("--force", "-f", help="Cancel active ones first")] = False,
) -> None:
    """Forget ended payloads and their output."""
    _each(ctx, payload_ids, "force" if force else "delete")


@app.command("mcp-stdio")
def mcp_stdio(
    ctx: typer.Context,
    server: Annotated[
        str | None, typer.Option("--server", "-s", help="Server URL (as the global --server)")
    ] = None,
    token: Annotated[str | None, typer.Option("--token", help="Bearer token")] = None,
) -> None:
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


def main(argv: list[str] | None = None) -> None:
    """The `pericles` console script.

    Typer's standalone mode turns usage errors into exit 2 and Ctrl-C into 130; what is
    left to us are the client's errors and local I/O errors, as one line each.
    """
    try:
        app(args=argv, prog_name="pericles")
    except ClientError as exc:
        _report(exc)
        sys.exit(exitcodes.for_error(exc))
    except OSError as exc:  # --stdin FILE unreadable, and the like
        print(f"pericles: {exc}", file=sys.stderr)
        sys.exit(exitcodes.ERROR)
