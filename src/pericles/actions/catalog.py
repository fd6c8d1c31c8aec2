"""Named actions: the `[[action]]` tables of the actions file, and turning a call into a spec.

    [[action]]
    name = "backup"                      # [a-z0-9][a-z0-9_.-]*: it is a URL segment
    title = "Back up a database"
    cmd = "/usr/local/bin/backup"        # fixed: no placeholders
    params = ["--db", "{db}", "--compress", "{level}"]
    env = { LANG = "C.UTF-8" }           # fixed variables
    cwd = "/srv/backups"
    timeout = 600                        # also idle_timeout, kill_grace, priority
    labels = { kind = "backup" }
    concurrency = 1                      # runs of this action at once; the rest wait
    lock = "db"                          # or: one run at a time among actions sharing it
    hook_secret = "..."                  # or hook_secret_env = "NAME": POST .../hook
    hook_args = { db = "/repository/name" }   # argument <- JSON pointer into the body
    [action.args.db]
    enum = ["orders", "users"]

The file may be the `--policy` file too: only its `action` key is read here. An action's
spec is admitted like any `POST /payloads` (caps, runner, policy), so a policy still
decides whether its command may run.
"""

from __future__ import annotations

import dataclasses
import math
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jsonpointer
from pydantic import BaseModel, SecretStr, ValidationError

from pericles.actions import template
from pericles.actions.arguments import Argument, ArgumentError, arguments_model, parse_argument
from pericles.envhooks import hook
from pericles.errors import ActionNotFound, FieldError, InvalidArgs
from pericles.model import Invocation, PayloadSpec

_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")
_LOCK = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_KEYS = {
    "name",
    "title",
    "description",
    "cmd",
    "params",
    "args",
    "env",
    "cwd",
    "timeout",
    "idle_timeout",
    "kill_grace",
    "labels",
    "priority",
    "concurrency",
    "lock",
    "hook_secret",
    "hook_secret_env",
    "hook_args",
    "hook_replay_window",
}
#: How long a hook delivery is remembered to refuse its replay, unless the action says.
DEFAULT_REPLAY_WINDOW = 24 * 3600.0


class ActionsError(ValueError):
    """The actions file cannot be used; the message names the action and the key."""


@dataclasses.dataclass(frozen=True, slots=True)
class Hook:
    """How `POST /actions/{name}/hook` is checked and read."""

    secret: bytes
    #: argument name -> RFC 6901 JSON pointer into the delivery's body
    pointers: Mapping[str, str]
    replay_window: float


@dataclasses.dataclass(frozen=True, slots=True)
class Action:
    name: str
    title: str
    description: str | None
    cmd: str
    params: tuple[template.Element, ...]
    template_text: tuple[str, ...]
    arguments: tuple[Argument, ...]
    model: type[BaseModel]
    #: Fixed spec fields: env, cwd, timeout, idle_timeout, kill_grace, labels, priority.
    fixed: Mapping[str, Any]
    lock: str | None
    lock_limit: int
    hook: Hook | None

    def schema(self) -> dict[str, Any]:
        """The JSON Schema of this action's `args` object."""
        return self.model.model_json_schema(by_alias=True)

    def validate(self, args: Any) -> dict[str, Any]:
        """`args` checked: the value of every argument, defaults filled in.

        Raises `InvalidArgs` naming each bad argument (`args.NAME`) and never quoting a secret.
        """
        if not isinstance(args, dict):
            raise InvalidArgs(errors=[FieldError("args", "must be a JSON object")])
        try:
            checked = self.model.model_validate(args)
        except ValidationError as exc:
            errors = [
                FieldError(
                    ".".join(["args", *(str(part) for part in e["loc"])]),
                    # pydantic says "Value error, ..." for our own checks' messages.
                    e["msg"].removeprefix("Value error, "),
                )
                for e in exc.errors(include_url=False, include_input=False)
            ]
            raise InvalidArgs(errors=errors) from None
        values = checked.model_dump(by_alias=True)
        return {a.name: values[a.name] for a in self.arguments}

    def invoke(
        self, args: Any, labels: Mapping[str, str] | None = None
    ) -> tuple[PayloadSpec, Invocation]:
        """The payload spec this call renders, and what its record and run must know.

        `labels` are the caller's own (the MCP endpoint's `client: mcp`), laid over the
        action's; they are checked with the rest of the spec.
        """
        values = self.validate(args)
        texts = {a.name: a.render(values[a.name]) for a in self.arguments if not a.secret}
        secret_env = {
            a.env: secret_text(values[a.name])
            for a in self.arguments
            if a.secret and a.env is not None
        }
        spec = PayloadSpec.model_validate(
            {
                "cmd": self.cmd,
                "params": template.render(self.params, texts),
                **self.fixed,
                **({"secret_env": secret_env} if secret_env else {}),
                **({"labels": {**self.fixed.get("labels", {}), **labels}} if labels else {}),
            }
        )
        shown = {a.name: values[a.name] for a in self.arguments if not a.secret}
        invocation = Invocation(
            action=self.name,
            args=shown,
            lock=self.lock,
            lock_limit=self.lock_limit,
            declared_env=frozenset([*self.fixed.get("env", {}), *secret_env]),
        )
        return spec, invocation


class Catalog:
    """The actions the server offers, by name; replaced whole on reload."""

    def __init__(self, actions: list[Action], source: str | None = None) -> None:
        self._actions = {action.name: action for action in actions}
        self.source = source

    def __iter__(self) -> Any:
        return iter(self._actions.values())

    def __len__(self) -> int:
        return len(self._actions)

    def get(self, name: str) -> Action:
        try:
            return self._actions[name]
        except KeyError:
            raise ActionNotFound(name) from None


EMPTY = Catalog([])


# -- loading ------------------------------------------------------------------------------


def _string(data: Mapping[str, Any], key: str, where: str) -> str | None:
    value = data.get(key)
    if value is not None and not isinstance(value, str):
        raise ActionsError(f"{where}: {key} must be a string")
    return value


def _seconds(data: Mapping[str, Any], key: str, where: str) -> float | None:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ActionsError(f"{where}: {key} must be a number of seconds")
    if value <= 0:
        raise ActionsError(f"{where}: {key} must be over 0")
    return float(value)


def _fixed(data: Mapping[str, Any], where: str) -> dict[str, Any]:
    """The spec fields the action sets itself, checked as `PayloadSpec` checks them."""
    fixed = {
        key: data[key]
        for key in ("env", "cwd", "timeout", "idle_timeout", "kill_grace", "labels", "priority")
        if key in data
    }
    for name in fixed.get("env") or {}:
        if (entry := hook(str(name))) is not None:
            raise ActionsError(f"{where}: env {name} ({entry}) can change what a program does")
    try:
        PayloadSpec.model_validate({"cmd": "x", **fixed})
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        loc = ".".join(str(part) for part in first["loc"])
        raise ActionsError(f"{where}: {loc}: {first['msg']}") from None
    return fixed


def _lock(data: Mapping[str, Any], name: str, where: str) -> tuple[str | None, int]:
    concurrency = data.get("concurrency")
    if concurrency is not None and (
        isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1
    ):
        raise ActionsError(f"{where}: concurrency must be an integer of at least 1")
    lock = _string(data, "lock", where)
    if lock is not None:
        if not _LOCK.fullmatch(lock):
            raise ActionsError(f"{where}: lock names are letters, digits, _ . and - only")
        return lock, concurrency or 1
    if concurrency is not None:
        # ':' is not allowed in lock names, so this never meets a named lock.
        return f"action:{name}", concurrency
    return None, 1


def _pointers(
    data: Mapping[str, Any], arguments: tuple[Argument, ...], where: str
) -> dict[str, str]:
    pointers = data.get("hook_args", {})
    if not isinstance(pointers, dict) or not all(isinstance(v, str) for v in pointers.values()):
        raise ActionsError(f"{where}: hook_args maps argument names to JSON pointers (/a/b)")
    for pointer in pointers.values():
        try:
            jsonpointer.JsonPointer(pointer)
        except jsonpointer.JsonPointerException as exc:
            raise ActionsError(f"{where}: hook_args: {pointer!r}: {exc}") from None
    if unknown := set(pointers) - {a.name for a in arguments}:
        raise ActionsError(f"{where}: hook_args names unknown arguments {sorted(unknown)}")
    return dict(pointers)


def _hook(
    data: Mapping[str, Any], arguments: tuple[Argument, ...], where: str, environ: Mapping[str, str]
) -> Hook | None:
    secret = _string(data, "hook_secret", where)
    secret_env = _string(data, "hook_secret_env", where)
    if secret is None and secret_env is None:
        if "hook_args" in data or "hook_replay_window" in data:
            raise ActionsError(f"{where}: hook_args needs hook_secret or hook_secret_env")
        return None
    if secret is not None and secret_env is not None:
        raise ActionsError(f"{where}: give hook_secret or hook_secret_env, not both")
    if secret_env is not None:
        secret = environ.get(secret_env)
        if secret is None:
            raise ActionsError(f"{where}: hook_secret_env {secret_env} is not set")
    if secret is None or len(secret) < 16:
        raise ActionsError(f"{where}: the hook secret must be at least 16 characters")
    window = _seconds(data, "hook_replay_window", where) or DEFAULT_REPLAY_WINDOW
    return Hook(secret.encode(), _pointers(data, arguments, where), window)


def _elements(data: Mapping[str, Any], arguments: tuple[Argument, ...], where: str) -> Any:
    params = data.get("params", [])
    if not isinstance(params, list) or not all(isinstance(p, str) for p in params):
        raise ActionsError(f"{where}: params must be a list of strings")
    try:
        elements = tuple(template.parse(p, f"{where}: params") for p in params)
    except template.TemplateError as exc:
        raise ActionsError(str(exc)) from None
    by_name = {a.name: a for a in arguments}
    used: set[str] = set()
    for element in elements:
        for name in element.names:
            argument = by_name.get(name)
            if argument is None:
                raise ActionsError(f"{where}: params name {{{name}}}, which is not in args")
            if argument.secret:
                raise ActionsError(f"{where}: {name} is a secret: it goes to env, never argv")
            if argument.type == "boolean" and element.alone != name:
                raise ActionsError(f"{where}: boolean {{{name}}} must be an element by itself")
            used.add(name)
    unused = [a.name for a in arguments if not a.secret and a.name not in used]
    if unused:
        raise ActionsError(f"{where}: args {unused} are not used in params")
    return elements, tuple(params)


def _action(data: Any, index: int, environ: Mapping[str, str]) -> Action:
    if not isinstance(data, dict):
        raise ActionsError(f"action {index}: expected a table")
    name = data.get("name")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ActionsError(f"action {index}: name must match {_NAME.pattern}")
    where = f"action {name!r}"
    if unknown := set(data) - _KEYS:
        raise ActionsError(f"{where}: unknown keys {sorted(unknown)}")
    cmd = _string(data, "cmd", where)
    if not cmd or "{" in cmd or "}" in cmd:
        raise ActionsError(f"{where}: cmd must be a fixed command (no placeholders)")
    tables = data.get("args", {})
    if not isinstance(tables, dict):
        raise ActionsError(f"{where}: args must be a table of tables")
    try:
        arguments = tuple(parse_argument(n, t, where) for n, t in tables.items())
    except ArgumentError as exc:
        raise ActionsError(str(exc)) from None
    envs = [a.env for a in arguments if a.secret]
    fixed = _fixed(data, where)
    if clash := (set(envs) & set(fixed.get("env") or {})) or len(set(envs)) != len(envs):
        raise ActionsError(f"{where}: secret env names must be unique and not in env: {clash}")
    elements, text = _elements(data, arguments, where)
    lock, limit = _lock(data, name, where)
    return Action(
        name=name,
        title=_string(data, "title", where) or name,
        description=_string(data, "description", where),
        cmd=cmd,
        params=elements,
        template_text=text,
        arguments=arguments,
        model=arguments_model(name, arguments),
        fixed=fixed,
        lock=lock,
        lock_limit=limit,
        hook=_hook(data, arguments, where, environ),
    )


def load(path: str | Path, environ: Mapping[str, str]) -> Catalog:
    """The actions of the TOML file at `path`; raises `ActionsError`.

    `environ` is the server's environment, for `hook_secret_env`.
    """
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ActionsError(f"cannot read the actions file {path}: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ActionsError(f"the actions file {path} is not valid TOML: {exc}") from None
    tables = data.get("action", [])
    if not isinstance(tables, list):
        raise ActionsError(f"{path}: `action` must be an array of tables ([[action]])")
    actions = [_action(table, i, environ) for i, table in enumerate(tables, 1)]
    names = [a.name for a in actions]
    if duplicates := sorted({n for n in names if names.count(n) > 1}):
        raise ActionsError(f"{path}: action names must be unique: {', '.join(duplicates)}")
    return Catalog(actions, str(path))


def secret_text(value: Any) -> str:
    """A validated secret's text."""
    return value.get_secret_value() if isinstance(value, SecretStr) else str(value)
