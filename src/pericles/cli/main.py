"""`pericles`: run, watch and manage payloads on a Pericles server from a terminal.

Every command but `serve` talks to the server through `pericles.client.Client` only.
Errors become one line on stderr, `pericles: <what went wrong>`, and an exit code from
`pericles.cli.exitcodes`; never a traceback. `--server` and `--token` go before or after
the command name (`pericles --server URL ls`, `pericles ls --server URL`).
"""

# No `from __future__ import annotations`, as in cli/payloads.py: typer reads these
# signatures at every start.

import atexit
import gc
import sys
from collections.abc import Sequence
from typing import Annotated

import typer

from pericles import __version__
from pericles.cli import actions, exitcodes, payloads
from pericles.cli.options import (
    Command,
    Connection,
    Group,
    ServerOpt,
    TokenOpt,
    client_of,
    report,
)
from pericles.cli.worker import worker
from pericles.client import ClientError, SpecNotValid
from pericles.errors import FieldError

app = typer.Typer(
    name="pericles",
    cls=Group,
    help="Run processes on a Pericles server and watch them, as if they ran here.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


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

payloads.register(app)
actions.register(app, client_of, payloads.create_and_attach)


@app.command("mcp-stdio", cls=Command)
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


def _collect_once() -> None:
    """Collect garbage once, then leave what is left to the end of the process.

    As it tears its modules down, Python collects garbage again and again, each time going
    over every object typer and httpx made: ~30 ms, a sixth of `pericles run --wait`. One
    collection here runs the finalizers of whatever is garbage, as those would; what is
    still alive is what the process holds until its very end.
    """
    gc.collect()
    gc.freeze()


def main(argv: list[str] | None = None) -> None:
    """The `pericles` console script.

    Typer's standalone mode turns usage errors into exit 2 and Ctrl-C into 130; what is
    left to us are the client's errors, specs it refuses before sending, and local I/O
    errors, as one line each. Anything else is a bug, still told in one line.
    """
    args = sys.argv[1:] if argv is None else argv
    atexit.register(_collect_once)
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
        report(exc)
        sys.exit(exitcodes.for_error(exc))
    except OSError as exc:  # --stdin FILE unreadable, and the like
        print(f"pericles: {exc}", file=sys.stderr)
        sys.exit(exitcodes.ERROR)
    except Exception as exc:  # a bug: one line, not a traceback, and a way to report it
        print(f"pericles: internal error: {type(exc).__name__}: {exc}", file=sys.stderr)
        sys.exit(exitcodes.ERROR)
    sys.exit(code if isinstance(code, int) else exitcodes.OK)


_COMMANDS = frozenset({"serve", "run", "ls", "show", "logs", "wait", "cancel", "rm"})
