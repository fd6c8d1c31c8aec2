"""The payload commands of `pericles`: run, ls, show, logs, wait, cancel, rm.

Each talks to the server through `pericles.client.Client` only; rich, the client (httpx)
and the model are imported by the commands that use them, so `pericles --help` costs none.
"""

# No `from __future__ import annotations`: typer reads each command's signature twice at
# start, and evaluating string annotations there (typing.ForwardRef) costs more than
# evaluating them once as this module is imported. Names imported for type checking only
# are quoted.

import contextlib
import json
import os
import signal
import sys
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from pericles.cli import exitcodes
from pericles.cli.options import (
    Command,
    IdArg,
    IdsArg,
    JsonFlag,
    ServerOpt,
    TokenOpt,
    client_of,
    report,
)
from pericles.client import AlreadyTerminal, ClientError, StillActive

if TYPE_CHECKING:
    from pericles.client import Client, StreamName
    from pericles.model import Payload


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
    client = client_of(ctx, server, token)
    if not wait:
        print(client.create(command[0], command[1:], **fields).id)
        return
    raise typer.Exit(
        create_and_attach(client, lambda: client.create(command[0], command[1:], **fields))
    )


def _resolved(
    ctx: typer.Context, payload_id: str, server: str | None, token: str | None
) -> tuple["Client", str]:
    """The client and the full id a given id or prefix names (show, logs, wait)."""
    client = client_of(ctx, server, token)
    return client, client.resolve(payload_id)


def _exit_as(record: Any) -> int:
    """The exit code for how it ended; a line on stderr unless it exited by itself."""
    line = exitcodes.ending(record)
    if line:
        print(f"pericles: {line}", file=sys.stderr)
    return exitcodes.for_record(record)


def create_and_attach(client: "Client", create: Callable[[], "Payload"]) -> int:
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


def _cancel_quietly(client: "Client", payload_id: str) -> None:
    # AlreadyTerminal: it ended by itself meanwhile. A second Ctrl-C: stop waiting for it.
    with contextlib.suppress(AlreadyTerminal, KeyboardInterrupt):
        client.cancel(payload_id)


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
        client_of(ctx, server, token).list(
            status=status or (), order="desc", limit=None if show_all else limit
        )
    )
    if as_json:
        render.print_json([render.record_json(r) for r in records])
    else:
        render.console().print(render.payload_table(records))


def show(
    ctx: typer.Context,
    payload_id: IdArg,
    as_json: JsonFlag = False,
    server: ServerOpt = None,
    token: TokenOpt = None,
) -> None:
    """Show one payload's record."""
    from pericles.cli import render  # rich and the model: only where shown

    client, full_id = _resolved(ctx, payload_id, server, token)
    record = client.get(full_id)
    if as_json:
        render.print_json(render.record_json(record))
    else:
        render.console().print(render.payload_fields(record))


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
    client, full_id = _resolved(ctx, payload_id, server, token)
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


def _follow_logs(client: "Client", payload_id: str, stream: "StreamName", as_json: bool) -> None:
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


def wait_payload(
    ctx: typer.Context,
    payload_id: IdArg,
    as_json: JsonFlag = False,
    server: ServerOpt = None,
    token: TokenOpt = None,
) -> None:
    """Wait until a payload ends; exit with its exit code, as `run --wait` does."""
    from pericles.cli import render  # rich and the model: only where shown

    client, full_id = _resolved(ctx, payload_id, server, token)
    spinning = sys.stdout.isatty() and not as_json
    status = render.console(stderr=True).status(f"waiting for {full_id[: render.SHORT_ID]}")
    with status if spinning else nullcontext():
        record = client.wait(full_id)
    if as_json:
        render.print_json(render.record_json(record))
    raise typer.Exit(_exit_as(record))


def _each(client: "Client", ids: list[str], action: str) -> None:
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
            report(exc)
            failed = failed or exitcodes.for_error(exc)
    if failed:
        raise typer.Exit(failed)


def cancel(
    ctx: typer.Context,
    payload_ids: IdsArg,
    server: ServerOpt = None,
    token: TokenOpt = None,
) -> None:
    """Cancel payloads: a pending one never starts, a running one is stopped."""
    _each(client_of(ctx, server, token), payload_ids, "cancel")


def rm(
    ctx: typer.Context,
    payload_ids: IdsArg,
    force: Annotated[bool, typer.Option("--force", "-f", help="Cancel active ones first")] = False,
    server: ServerOpt = None,
    token: TokenOpt = None,
) -> None:
    """Forget ended payloads and their output."""
    _each(client_of(ctx, server, token), payload_ids, "force" if force else "delete")


def register(app: typer.Typer) -> None:
    """Add the payload commands to `app`, in the order `--help` lists them."""
    app.command(cls=Command, help=RUN_HELP, context_settings={"allow_interspersed_args": False})(
        run
    )
    app.command("ls", cls=Command)(list_payloads)
    app.command(cls=Command)(show)
    app.command(cls=Command)(logs)
    app.command("wait", cls=Command)(wait_payload)
    app.command(cls=Command)(cancel)
    app.command(cls=Command)(rm)
