"""Pydantic's validation errors in the user's words, for every place that shows one.

The API answers them in problem bodies, `handler-serve` prints them for bad flags and the
`pericles` command for bad options: all three say "must not be empty" rather than pydantic's
"Value should have at least 1 item after validation", and name the thing as the user wrote it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from pydantic_core import ErrorDetails

_Words = Callable[[Mapping[str, Any]], str]

_KINDS = {
    "int": "a whole number",
    "float": "a number",
    "string": "a string",
    "str": "a string",
    "bool": "true or false",
    "list": "a list",
    "dict": "an object",
}


def _kind(error_type: str) -> str:
    prefix = error_type.split("_", 1)[0]
    return _KINDS.get(prefix, prefix)


def _num(value: Any) -> str:
    """0.0 as 0: a bound reads as the user would write it."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _length(ctx: Mapping[str, Any], key: str, bound: str) -> str:
    value = ctx.get(key)
    if key == "min_length" and value == 1:
        return "must not be empty"
    unit = "characters" if ctx.get("field_type") in (None, "String", "Value") else "items"
    return f"must have {bound} {value} {unit}"


_BY_TYPE: dict[str, _Words] = {
    "missing": lambda ctx: "is required",
    "extra_forbidden": lambda ctx: "is not a known field",
    "greater_than": lambda ctx: f"must be greater than {_num(ctx.get('gt'))}",
    "greater_than_equal": lambda ctx: f"must be at least {_num(ctx.get('ge'))}",
    "less_than": lambda ctx: f"must be less than {_num(ctx.get('lt'))}",
    "less_than_equal": lambda ctx: f"must be at most {_num(ctx.get('le'))}",
    "too_short": lambda ctx: _length(ctx, "min_length", "at least"),
    "string_too_short": lambda ctx: _length(ctx, "min_length", "at least"),
    "too_long": lambda ctx: _length(ctx, "max_length", "at most"),
    "string_too_long": lambda ctx: _length(ctx, "max_length", "at most"),
    "string_pattern_mismatch": lambda ctx: f"must match {ctx.get('pattern')}",
    "literal_error": lambda ctx: f"must be one of {ctx.get('expected')}",
    "enum": lambda ctx: f"must be one of {ctx.get('expected')}",
    "finite_number": lambda ctx: "must be a finite number",
    "int_from_float": lambda ctx: "must be a whole number",
    "json_invalid": lambda ctx: "is not valid JSON",
}


def words(error: ErrorDetails) -> str:
    """What is wrong with one value, in plain words ("must be at least 1")."""
    kind = error["type"]
    ctx: Mapping[str, Any] = error.get("ctx") or {}
    if kind in _BY_TYPE:
        return _BY_TYPE[kind](ctx)
    if kind in ("value_error", "assertion_error") and "error" in ctx:
        return str(ctx["error"])
    if kind.endswith(("_type", "_parsing")):
        return f"must be {_kind(kind)}"
    msg = error["msg"]
    return msg[:1].lower() + msg[1:]


def location(loc: tuple[int | str, ...]) -> str:
    """`env.PATH`, `params.2`, `limits.cpu_seconds`: pydantic's `[key]` markers left out."""
    return ".".join(str(part) for part in loc if part != "[key]")


def shown(value: Any, limit: int = 40) -> str:
    """A value as the user may recognise it, cut to `limit` characters."""
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
