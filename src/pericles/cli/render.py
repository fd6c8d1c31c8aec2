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
from typing import Any

from pydantic import TypeAdapter
from rich.console import Console
from rich.table import Table
from rich.text import Text

from pericles.model import OUTCOMES, Payload, Status

SHORT_ID = 8
_RECORD = TypeAdapter(Payload)


def console(stderr: bool = False) -> Console:
    stream = sys.stderr if stderr else sys.stdout
    width = None if stream.isatty() else 100_000
    return Console(file=stream, width=width, highlight=False, soft_wrap=not stream.isatty())


def record_json(record: Payload) -> Any:
    """The record as JSON-ready data: the server's field names, times as RFC 3339 strings."""
    return _RECORD.dump_python(record, mode="json")


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2) + "\n")


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


def status_text(record: Payload) -> Text:
    colour = OUTCOMES[record.state].colour
    if record.state is Status.FINISHED and record.exit_code != 0:
        colour = "red"
    return Text(record.status, style=colour)


def payload_table(records: Iterable[Payload], now: datetime | None = None) -> Table:
    now = now or datetime.now(UTC)
    table = Table(box=None, pad_edge=False, header_style="bold")
    table.add_column("ID", no_wrap=True)
    table.add_column("STATUS", no_wrap=True, max_width=40, overflow="ellipsis")
    table.add_column("COMMAND", overflow="ellipsis", no_wrap=True, ratio=1)
    table.add_column("AGE", justify="right", no_wrap=True)
    table.add_column("DURATION", justify="right", no_wrap=True)
    table.add_column("EXIT", justify="right", no_wrap=True)
    for record in records:
        table.add_row(
            record.id[:SHORT_ID],
            status_text(record),
            command_line(record),
            _age(record, now),
            _duration(record, now),
            _outcome(record),
        )
    return table


def payload_fields(record: Payload) -> Table:
    """One payload as `field  value` lines, leaving out what is unset."""
    table = Table(box=None, pad_edge=False, show_header=False)
    table.add_column(style="bold", no_wrap=True)
    table.add_column()
    table.add_row("id", record.id)
    table.add_row("status", status_text(record))
    table.add_row("command", command_line(record))
    for name, value in record_json(record).items():
        if name in {"id", "status", "cmd", "params"} or value in (None, {}, []):
            continue
        shown = json.dumps(value) if isinstance(value, dict | list) else str(value)
        table.add_row(name, shown)
    return table
