"""`pericles actions` and `pericles do NAME --arg ...`: named actions from a terminal.

`do` builds its options from the action's JSON Schema, asked of the server each time: a
flag per argument (`--db-name` for `db_name`), `--x/--no-x` for a boolean, a choice for an
enum, bounds for numbers, and `pericles do NAME --help` describes that action. Options not
given are not sent, so the server's defaults apply. A secret is read from
`PERICLES_ARG_<NAME>` or asked for without echo, never needed on the command line.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any

import click
import typer

if TYPE_CHECKING:
    from pericles.client import Client
    from pericles.model import Payload

# rich, the client (httpx) and the model are imported by the commands that use them:
# `pericles --help` needs none of them.

ClientOf = Callable[[typer.Context, str | None, str | None], "Client"]
#: Creates a payload with the function given, follows it to its end: the exit code.
CreateAndAttach = Callable[["Client", Callable[[], "Payload"]], int]

DO_HELP = """Run the named action NAME with its arguments as options; print the payload's id.

`pericles actions` lists the actions; `pericles do NAME --help` shows NAME's options.
With --wait, behave as `pericles run --wait`: its stdout on stdout, its stderr on stderr,
and its exit code.
"""


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _help(prop: dict[str, Any]) -> str:
    parts = [str(prop.get("description") or prop.get("title") or "")]
    kind = prop.get("x-pericles-type")
    if kind == "path":
        parts.append(f"(a path under {prop.get('x-pericles-root')})")
    if "pattern" in prop:
        parts.append(f"(matching {prop['pattern']})")
    if "default" in prop:
        parts.append(f"[default: {prop['default']}]")
    return " ".join(p for p in parts if p)


def _option(name: str, prop: dict[str, Any], required: bool) -> click.Option:
    """The option for one argument, from its schema."""
    kind = prop.get("x-pericles-type")
    flag, help_text = _flag(name), _help(prop)
    if kind == "boolean":
        return click.Option([f"{flag}/--no-{flag[2:]}", name], default=None, help=help_text)
    kind_type: Any = str
    if kind == "enum":
        kind_type = click.Choice(prop["enum"])
    elif kind == "integer":
        kind_type = click.IntRange(prop.get("minimum"), prop.get("maximum"))
    elif kind == "number":
        kind_type = click.FloatRange(prop.get("minimum"), prop.get("maximum"))
    elif kind == "secret":
        envvar = f"PERICLES_ARG_{name.upper()}"
        return click.Option(
            [flag, name],
            envvar=envvar,
            required=required,
            prompt=required and sys.stdin.isatty(),
            hide_input=True,
            help=f"{help_text} [env: {envvar}; asked for when not given]".strip(),
        )
    return click.Option([flag, name], type=kind_type, required=required, help=help_text)


def _connection_options() -> list[click.Parameter]:
    """--server and --token, accepted after the action's name as after any command."""
    return [
        click.Option(["--server", "-s"], metavar="URL", help="Server URL [env: PERICLES_URL]"),
        click.Option(["--token"], metavar="TOKEN", help="Bearer token [env: PERICLES_TOKEN]"),
    ]


def _connection(args: list[str]) -> tuple[str | None, str | None]:
    """The --server and --token among `args`, before the action's options are known."""
    probe = click.Command(
        "probe",
        params=_connection_options(),
        context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    )
    ctx = probe.make_context("probe", list(args), resilient_parsing=True)
    return ctx.params.get("server"), ctx.params.get("token")


def _command(info: dict[str, Any], run: Callable[..., None]) -> click.Command:
    schema = info.get("args_schema", {})
    required = set(schema.get("required", ()))
    params: list[click.Parameter] = [
        _option(name, prop, name in required) for name, prop in schema.get("properties", {}).items()
    ]
    params.append(
        click.Option(["--wait", "-w"], is_flag=True, help="Stream its output, exit as it does")
    )
    params.append(click.Option(["--json"], is_flag=True, help="Print the record as JSON"))
    params += _connection_options()
    help_text = info.get("title") or info["name"]
    if info.get("description"):
        help_text += f"\n\n{info['description']}"
    return click.Command(info["name"], params=params, callback=run, help=help_text)


def register(app: typer.Typer, client_of: ClientOf, create_and_attach: CreateAndAttach) -> None:
    """Add `actions` and `do` to the `pericles` command."""

    @app.command("actions")
    def list_actions(
        ctx: typer.Context,
        as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON")] = (
            False
        ),
        server: Annotated[
            str | None,
            typer.Option("--server", "-s", metavar="URL", help="Server URL [env: PERICLES_URL]"),
        ] = None,
        token: Annotated[
            str | None,
            typer.Option("--token", metavar="TOKEN", help="Bearer token [env: PERICLES_TOKEN]"),
        ] = None,
    ) -> None:
        """List the named actions this token may run, with their arguments."""
        from rich.table import Table

        from pericles.cli import render

        found = client_of(ctx, server, token).actions()
        if as_json:
            render.print_json(found)
            return
        table = Table("NAME", "TITLE", "ARGUMENTS", box=None, pad_edge=False)
        for info in found:
            properties = info.get("args_schema", {}).get("properties", {})
            table.add_row(info["name"], info.get("title") or "", " ".join(map(_flag, properties)))
        render.console().print(table)

    @app.command(
        "do",
        help=DO_HELP,
        context_settings={
            "ignore_unknown_options": True,
            "allow_extra_args": True,
            "allow_interspersed_args": False,
        },
        add_help_option=False,
    )
    def do(
        ctx: typer.Context,
        name: Annotated[str | None, typer.Argument(metavar="NAME", show_default=False)] = None,
    ) -> None:
        if name is None or name in ("--help", "-h"):
            typer.echo(ctx.get_help())
            return
        client = client_of(ctx, *_connection(list(ctx.args)))
        info = client.action(name)

        def run(wait: bool, json: bool, server: Any, token: Any, **given: Any) -> None:
            from pericles.cli import render

            args = {key: value for key, value in given.items() if value is not None}
            if wait:
                raise typer.Exit(create_and_attach(client, lambda: client.run_action(name, args)))
            record = client.run_action(name, args)
            if json:
                render.print_json(render.record_json(record))
            else:
                print(record.id)

        command = _command(info, run)
        command.main(list(ctx.args), prog_name=f"pericles do {name}", standalone_mode=True)
