"""An action's arguments: their types, how a value is checked, and the JSON Schema of them all.

Each `[action.args.NAME]` table becomes one field of a pydantic model built for the action,
so one model both validates a request's `args` (errors name the argument) and writes the
JSON Schema that `GET /actions` shows and that forms and the CLI build their inputs from.

Types and their keys:

    type = "string"    pattern (full match), min_length, max_length, leading_dash
    enum = [...]       one of these strings (type "enum", or implied by `enum`)
    type = "integer"   minimum, maximum
    type = "number"    minimum, maximum (finite)
    type = "boolean"   flag: the argv element it renders when true; nothing when false
    type = "path"      root: the value is resolved under it and must stay inside it
    type = "secret"    env: the variable it is given in; never in argv, never stored

Every type takes `title`, `description` and `default`; an argument without a default is
required (a boolean's default is false). Strings never hold control characters (a newline
may end a line where a program reads lines), and never start with "-" unless
`leading_dash = true`: a program would take such a value for an option.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    create_model,
)

from pericles.envhooks import hook
from pericles.model import EnvName, SecretValue

TYPES = ("string", "enum", "integer", "number", "boolean", "path", "secret")
_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_INT_BOUND = 2**63


class ArgumentError(ValueError):
    """An argument's table in the actions file is unusable."""


@dataclasses.dataclass(frozen=True, slots=True)
class Argument:
    name: str
    type: str
    title: str | None = None
    description: str | None = None
    default: Any = None
    required: bool = True
    pattern: re.Pattern[str] | None = None
    min_length: int | None = None
    max_length: int | None = None
    leading_dash: bool = False
    enum: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    flag: str | None = None
    root: str | None = None
    env: str | None = None

    @property
    def secret(self) -> bool:
        return self.type == "secret"

    def annotation(self) -> Any:
        """The pydantic type of a value of this argument, constraints included."""
        extra: dict[str, Any] = {"x-pericles-type": self.type}
        if self.type in ("string", "path"):
            validators = [AfterValidator(self._check_text)]
            if self.type == "path":
                validators.append(AfterValidator(self._under_root))
                extra["x-pericles-root"] = self.root
            if self.pattern is not None:
                # JSON Schema patterns match anywhere; ours must match the whole value.
                extra["pattern"] = f"^(?:{self.pattern.pattern})$"
            field = Field(min_length=self.min_length, max_length=self.max_length)
            return Annotated[str, field, *validators, Field(json_schema_extra=extra)]
        if self.type == "enum":
            return Annotated[Literal[self.enum], Field(json_schema_extra=extra)]
        if self.type in ("integer", "number"):
            base: type = int if self.type == "integer" else float
            lo = self.minimum if self.minimum is not None else None
            hi = self.maximum if self.maximum is not None else None
            if self.type == "integer":  # what an argv element and a C long both hold
                lo = -_INT_BOUND if lo is None else lo
                hi = _INT_BOUND - 1 if hi is None else hi
            bounds = Field(ge=lo, le=hi, allow_inf_nan=False, json_schema_extra=extra)
            return Annotated[base, bounds]
        if self.type == "boolean":
            extra["x-pericles-flag"] = self.flag
            return Annotated[bool, Field(json_schema_extra=extra)]
        extra["x-pericles-env"] = self.env
        # The spec's own secret type: the same checks and messages as `secret_env`.
        return Annotated[SecretValue, Field(json_schema_extra=extra)]

    def field(self) -> Any:
        """The pydantic field: its default, its name on the wire, and what a form shows."""
        return Field(
            default=... if self.required else self.default,
            alias=self.name,
            title=self.title or self.name,
            description=self.description,
        )

    def _check_text(self, value: str) -> str:
        if _CONTROL.search(value):
            raise ValueError("must not contain control characters (newlines, tabs, NUL...)")
        if self.type == "string" and not self.leading_dash and value.startswith("-"):
            raise ValueError("must not start with '-' (it would read as an option)")
        if self.pattern is not None and not self.pattern.fullmatch(value):
            raise ValueError(f"must match the pattern {self.pattern.pattern!r}")
        return value

    def _under_root(self, value: str) -> str:
        assert self.root is not None
        if not value:
            raise ValueError("must not be empty")
        # realpath resolves `..` and every symlink, so the test below sees where it leads.
        resolved = os.path.realpath(os.path.join(self.root, value))
        if resolved != self.root and not resolved.startswith(self.root.rstrip("/") + "/"):
            raise ValueError(f"must stay under {self.root}")
        return resolved

    def render(self, value: Any) -> str | None:
        """The text this value puts into argv; None for a false boolean (no element)."""
        if self.type == "boolean":
            return self.flag if value else None
        if self.type == "number":
            return repr(float(value))
        return str(value)


# -- reading a table ----------------------------------------------------------------------

_COMMON = {"type", "title", "description", "default"}
_KEYS: dict[str, set[str]] = {
    "string": _COMMON | {"pattern", "min_length", "max_length", "leading_dash"},
    "enum": _COMMON | {"enum"},
    "integer": _COMMON | {"minimum", "maximum"},
    "number": _COMMON | {"minimum", "maximum"},
    "boolean": _COMMON | {"flag"},
    "path": _COMMON | {"root", "pattern", "max_length"},
    "secret": _COMMON | {"env"},
}


def _text(table: dict[str, Any], key: str, where: str) -> str | None:
    value = table.get(key)
    if value is not None and not isinstance(value, str):
        raise ArgumentError(f"{where}: {key} must be a string")
    return value


def _count(table: dict[str, Any], key: str, where: str) -> int | None:
    value = table.get(key)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
        raise ArgumentError(f"{where}: {key} must be a non-negative integer")
    return value


def _bound(table: dict[str, Any], key: str, where: str) -> float | None:
    value = table.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ArgumentError(f"{where}: {key} must be a finite number")
    return value


def _kind(table: dict[str, Any], where: str) -> str:
    kind = table.get("type", "enum" if "enum" in table else "string")
    if kind == "string" and "enum" in table:
        kind = "enum"
    if kind not in TYPES:
        raise ArgumentError(f"{where}: type must be one of {', '.join(TYPES)}")
    if unknown := set(table) - _KEYS[kind]:
        raise ArgumentError(f"{where}: unknown keys for type {kind}: {sorted(unknown)}")
    return str(kind)


def parse_argument(name: str, table: Any, where: str) -> Argument:
    """The argument `name` from its TOML table; raises `ArgumentError`."""
    where = f"{where}: args.{name}"
    if not _NAME.fullmatch(name):
        raise ArgumentError(f"{where}: names are lowercase letters, digits and _ (a-z first)")
    if not isinstance(table, dict):
        raise ArgumentError(f"{where}: expected a table")
    kind = _kind(table, where)
    fields: dict[str, Any] = {
        "name": name,
        "type": kind,
        "title": _text(table, "title", where),
        "description": _text(table, "description", where),
        "min_length": _count(table, "min_length", where),
        "max_length": _count(table, "max_length", where),
        "minimum": _bound(table, "minimum", where),
        "maximum": _bound(table, "maximum", where),
        "leading_dash": bool(table.get("leading_dash", False)),
    }
    if (pattern := _text(table, "pattern", where)) is not None:
        try:
            fields["pattern"] = re.compile(pattern)
        except re.error as exc:
            raise ArgumentError(f"{where}: bad pattern: {exc}") from exc
    if kind in _KIND_FIELDS:
        fields |= _KIND_FIELDS[kind](table, where)
    if "default" in table:
        fields["default"], fields["required"] = table["default"], False
    elif kind == "boolean":
        fields["default"], fields["required"] = False, False
    argument = Argument(**fields)
    if not argument.required:
        _check_default(argument, where)
    return argument


def _enum_fields(table: dict[str, Any], where: str) -> dict[str, Any]:
    values = table.get("enum")
    if not isinstance(values, list) or not values or not all(isinstance(v, str) for v in values):
        raise ArgumentError(f"{where}: enum must be a non-empty list of strings")
    return {"enum": tuple(values)}


def _boolean_fields(table: dict[str, Any], where: str) -> dict[str, Any]:
    flag = _text(table, "flag", where)
    if not flag:
        raise ArgumentError(f"{where}: a boolean needs flag = the argv element it renders")
    return {"flag": flag}


def _path_fields(table: dict[str, Any], where: str) -> dict[str, Any]:
    root = _text(table, "root", where)
    if not root or not root.startswith("/"):
        raise ArgumentError(f"{where}: a path needs root = an absolute directory")
    return {"root": os.path.realpath(root)}


def _secret_fields(table: dict[str, Any], where: str) -> dict[str, Any]:
    env = _text(table, "env", where)
    try:
        TypeAdapter(EnvName).validate_python(env, strict=True)
    except ValidationError:
        raise ArgumentError(f"{where}: a secret needs env = a variable name") from None
    if (entry := hook(env or "")) is not None:
        raise ArgumentError(f"{where}: env {env} ({entry}) can change what a program does")
    if "default" in table:
        raise ArgumentError(f"{where}: a secret has no default")
    return {"env": env}


_KIND_FIELDS: dict[str, Callable[[dict[str, Any], str], dict[str, Any]]] = {
    "enum": _enum_fields,
    "boolean": _boolean_fields,
    "path": _path_fields,
    "secret": _secret_fields,
}


def _check_default(argument: Argument, where: str) -> None:
    try:
        TypeAdapter(argument.annotation()).validate_python(argument.default, strict=True)
    except ValidationError as exc:
        message = exc.errors(include_url=False)[0]["msg"]
        raise ArgumentError(f"{where}: default {argument.default!r}: {message}") from None


# -- a model of them all ------------------------------------------------------------------


def arguments_model(action: str, arguments: tuple[Argument, ...]) -> type[BaseModel]:
    """The model that checks an action's `args` object and writes its JSON Schema.

    Fields get safe Python names and the argument's name as alias, so an argument may be
    called `json` or `copy` without shadowing BaseModel's attributes.
    """
    fields: dict[str, Any] = {
        f"a{i}_{a.name}": (a.annotation(), a.field()) for i, a in enumerate(arguments)
    }
    config = ConfigDict(extra="forbid", strict=True, title=f"{action} arguments")
    model: type[BaseModel] = create_model(f"args_{action}", __config__=config, **fields)
    return model
