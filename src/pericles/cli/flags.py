"""`handler-serve`'s flags, made from the `Settings` model: parsing, `--help` and errors.

Every field of `Settings` is a flag `--field-name`, so a setting added anywhere shows up
here with a clean help line and one-line errors, with nothing to add in this module. The
help says each flag's kind of value (N, SECONDS, BYTES, FILE...), what it does and its real
default; a bad value is one line naming the flag as the user typed it.
"""

from __future__ import annotations

import argparse
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import SecretStr, ValidationError
from pydantic.fields import FieldInfo

from pericles import __version__, validation
from pericles.settings import Settings

PROG = "handler-serve"
ENV_PREFIX = "PERICLES_"


class UsageError(Exception):
    """A bad command line or setting: one line per problem, exit 2."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("\n".join(lines))
        self.lines = lines


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> typing.NoReturn:
        raise UsageError([f"{message} (see {PROG} --help)"])


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _plain(annotation: Any) -> Any:
    """`int | None` -> int; `list[str]` stays a list."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return args[0] if len(args) == 1 else annotation
    return annotation


def _metavar(name: str, info: FieldInfo) -> str:
    """What kind of value a flag takes; a field may name it: `json_schema_extra={"metavar"}`."""
    extra = info.json_schema_extra
    if isinstance(extra, dict) and isinstance(extra.get("metavar"), str):
        return str(extra["metavar"])
    kind = _plain(info.annotation)
    text = (info.description or "").lower()
    timed = "second" in text or name.endswith(("_timeout", "_grace", "_for"))
    if typing.get_origin(kind) is Literal:
        return "{" + ",".join(str(a) for a in typing.get_args(kind)) + "}"
    if typing.get_origin(kind) is list:
        return "TEXT"
    if kind is Path or text.startswith(("toml file", "file ")):
        return "FILE"
    if kind is SecretStr:
        return "SECRET"
    if kind is float:
        return "SECONDS" if timed else "NUMBER"
    if kind is int:
        return "SECONDS" if timed else "BYTES" if "bytes" in text else "N"
    return "TEXT"


def _size(value: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if value >= size and value % size == 0:
            return f"{value // size} {unit}"
    return str(value)


def _default(name: str, info: FieldInfo) -> str | None:
    value = info.get_default(call_default_factory=True)
    if value is None or value == []:
        return None
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, int) and _metavar(name, info) == "BYTES":
        return _size(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _help(name: str, info: FieldInfo) -> str:
    text = (info.description or "").strip()
    if typing.get_origin(_plain(info.annotation)) is list and "repeatable" not in text.lower():
        text += " (repeatable)"
    default = _default(name, info)
    if default is not None and "default" not in text.lower():
        text += f" [default: {default}]"
    return text + f" [env: {ENV_PREFIX}{name.upper()}]"


def parser() -> argparse.ArgumentParser:
    """The parser of every `Settings` field; values stay text for pydantic to check."""
    result = _Parser(
        prog=PROG,
        description="Serve the Pericles HTTP API. Flags override PERICLES_* variables.",
        argument_default=argparse.SUPPRESS,
        formatter_class=lambda prog: argparse.HelpFormatter(prog, max_help_position=34),
        epilog="Exit status: 0 stopped cleanly; 1 the store cannot be used; 2 bad flags or "
        "settings; 3 cannot listen (port in use, no permission).",
    )
    result.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    for name, info in Settings.model_fields.items():
        kind = _plain(info.annotation)
        if kind is bool:
            result.add_argument(
                flag(name), dest=name, action=argparse.BooleanOptionalAction, help=_help(name, info)
            )
        elif typing.get_origin(kind) is list:
            result.add_argument(
                flag(name),
                dest=name,
                action="append",
                metavar=_metavar(name, info),
                help=_help(name, info),
            )
        else:
            result.add_argument(
                flag(name), dest=name, metavar=_metavar(name, info), help=_help(name, info)
            )
    return result


def _errors(exc: ValidationError, given: dict[str, Any]) -> list[str]:
    lines = []
    for error in exc.errors(include_url=False):
        loc = error["loc"]
        words = validation.words(error)
        if not loc:  # a rule across fields: its message names them
            lines.append(words)
            continue
        name = str(loc[0])
        where = flag(name) if name in given else f"{ENV_PREFIX}{name.upper()}"
        if name in Settings.model_fields and error["type"] != "missing":
            value = error.get("input")
            words += f", got {value if isinstance(value, str) else validation.shown(value)}"
        lines.append(f"{where}: {words}")
    return lines


def settings(argv: Sequence[str]) -> Settings:
    """The settings from these flags, then `PERICLES_*` variables, then defaults.

    Raises `UsageError` with one line per bad flag or variable; `--help` and `--version`
    print and exit 0.
    """
    given = vars(parser().parse_args(list(argv)))
    try:
        return Settings(**given)
    except ValidationError as exc:
        raise UsageError(_errors(exc, given)) from None
