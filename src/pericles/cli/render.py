"""How the command shows things: tables and fields for people, JSON for programs.

Colours only when stdout is a terminal (Rich decides, and honours NO_COLOR); piped output
is plain text, never cut to 80 columns.
"""

from __future__ import annotations

import json
import shlex
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from functools import cache
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from pericles.model import OUTCOMES, Payload, Status, record_fields

if TYPE_CHECKING:
    from pydantic import TypeAdapter

SHORT_ID = 8


@cache
def _record_adapter() -> TypeAdapter[Payload]:
    # pydantic only for --json: a table needs none of it (~0.1 s to import and build).
    from pydantic import TypeAdapter

    return TypeAdapter(Payload)


def console(stderr: bool = False) -> Console:
    stream = sys.stderr if stderr else sys.stdout
    width = None if stream.isatty() else 100_000
    return Console(file=stream, width=width, highlight=False, soft_wrap=not stream.isatty())


def record_json(record: Payload) -> Any:
    """The record as the server shows it: its field names, null fields left out, times as
    RFC 3339 strings."""
    data = _record_adapter().dump_python(record, mode="json")
    return {name: data[name] for name in record_fields(record)}


def print_json(value: Any) -> None:
    """Indented by four, as the server indents its answers."""
    sys.stdout.write(json.dumps(value, indent=4) + "\n")


def command_line(record: Payload) -> str:
    return shlex.join([record.cmd, *record.params])


def human_seconds(seconds: float) -> str:
    """3.2s, 4m05s, 2h07m, 3d04h."""
    if seconds < 60:
        return f"{seconds:.1f}s" if seconds < 10 else f"{seconds:.0f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


def _age(record: Payload, now: datetime) -> str:
    if record.created_at is None:
        return "-"
    return human_seconds(max(0.0, (now - record.created_at).total_seconds()))


def _duration(record: Payload, now: datetime) -> str:
    if record.duration_seconds is not None:
        return human_seconds(record.duration_seconds)
    if record.started_at is not None and not record.terminal:
        return human_seconds(max(0.0, (now - record.started_at).total_seconds()))
    return "-"


def _outcome(record: Payload) -> str:
    if record.exit_code is not None:
        return str(record.exit_code)
    return record.signal or "-"


def status_text(record: Payload, short: bool = False) -> Text:
    """The status, coloured; `short` cuts `error:start('cmd':reason` to `error:start`."""
    colour = OUTCOMES[record.state].colour
    if record.state is Status.FINISHED and record.exit_code != 0:
        colour = "red"
    text = record.status.partition("(")[0] if short else record.status
    return Text(text, style=colour)


def payload_table(records: Iterable[Payload], now: datetime | None = None) -> Table:
    now = now or datetime.now(UTC)
    table = Table(box=None, pad_edge=False, header_style="bold")
    table.add_column("ID", no_wrap=True)
    table.add_column("STATUS", no_wrap=True)
    table.add_column("COMMAND", overflow="ellipsis", no_wrap=True, ratio=1)
    table.add_column("AGE", justify="right", no_wrap=True)
    table.add_column("DURATION", justify="right", no_wrap=True)
    table.add_column("EXIT", justify="right", no_wrap=True)
    for record in records:
        table.add_row(
            record.id[:SHORT_ID],
            status_text(record, short=True),
            command_line(record),
            _age(record, now),
            _duration(record, now),
            _outcome(record),
        )
    return table


def payload_fields(record: Payload) -> Text:
    """One payload as `field  value` lines, leaving out what is unset; no trailing spaces."""
    rows: list[tuple[str, str | Text]] = [
        ("id", record.id),
        ("status", status_text(record)),
        ("command", command_line(record)),
    ]
    for name, value in record_json(record).items():
        if name in {"id", "status", "cmd", "params"} or value in (None, {}, []):
            continue
        rows.append((name, json.dumps(value) if isinstance(value, dict | list) else str(value)))
    width = max(len(name) for name, _ in rows)
    lines = [Text.assemble((name.ljust(width), "bold"), "  ", value) for name, value in rows]
    return Text("\n").join(lines)
