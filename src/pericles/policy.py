"""Command policy: which commands may run, with which parameters, environment and directory.

Rules come from `--allow PATTERN` (repeatable) and `--policy FILE` (TOML). A rule matches on
the command's resolved file (as `process.exe.resolve` finds it: PATH lookup, `..` and symlinks
resolved); its own path is resolved the same way when loaded, so `--allow /bin/echo` holds
where /bin links to /usr/bin. A pattern may use shell wildcards per path segment
(`/usr/bin/*`; `*` never spans a `/`). A payload is allowed by the first rule that matches
its file and accepts everything else it asks; refused otherwise, naming the rule that
matched its file (or none) and why.

    [[rule]]
    name = "greet"                 # shown in refusals; default "rule N"
    cmd = "/bin/echo"              # path, bare name (looked up on the default PATH) or pattern
    sha256 = "..."                 # the file must have this digest
    max_params = 3
    params = [{values = ["-n", "-e"]}, {regex = "[a-z ]+"}]   # per position, regex fullmatch
    rest = {regex = "[a-z]+"}      # positions after `params`; without it, none are allowed
    env = ["LANG", "LC_*"]         # the only env names accepted (patterns: shell wildcards)
    cwd = ["/srv/work"]            # cwd must be one of these or under one
    max_timeout = 60               # also the default timeout (see `service.admission`)
    max_memory = 268435456         # limits.memory_bytes cap, also the default

The environment is an allow-list: a rule accepts only the variable names its `env` lists
(in `env` and `secret_env` alike), and a rule without `env`, as every `--allow PATTERN` rule,
accepts none. A deny-list could never be complete: PATH points `tar` at another `gzip`,
editor, pager and option variables make git, less and tar run commands. `PATH` is no
exception: payloads get the server's (`--payload-path`) unless the rule lists `PATH`. The
loader and interpreter hooks of `pericles.envhooks` stay a second fence: a rule admits one
only by its exact name, never through a wildcard entry. Without `cwd`, a rule refuses any
`cwd`: a directory can change what an interpreter loads (Python puts it first on sys.path
for `-c`), so it must be named.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import os
import re
import tomllib
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

from pericles import envhooks
from pericles.model import PayloadSpec, Resolved

_WILDCARDS = re.compile(r"[*?\[]")


class PolicyError(ValueError):
    """The policy file or an --allow pattern cannot be used."""


class Paths(Protocol):
    """How the host resolves a rule's paths, as it resolves commands (`process.HOST_PATHS`):
    given by the composition root, so the policy never touches the file system itself."""

    def canonical(self, path: str) -> str:
        """`path` made absolute, `..` and symlinks resolved."""

    def which(self, name: str) -> str:
        """The file a bare `name` is on the default PATH; raises `LookupError` saying why not."""


@dataclasses.dataclass(frozen=True, slots=True)
class Decision:
    """The answer for one spec. `rule` names the rule that allowed or refused it."""

    allowed: bool
    rule: str | None
    reason: str
    exe: str | None = None
    exe_sha256: str | None = None
    max_timeout: float | None = None
    max_memory: int | None = None
    #: The allowing rule pins the file's sha256: the very file that was hashed must run.
    pinned: bool = False


NO_POLICY = Decision(True, None, "no policy: any command may run")


@dataclasses.dataclass(frozen=True, slots=True)
class ParamRule:
    regex: re.Pattern[str] | None = None
    values: frozenset[str] | None = None

    def accepts(self, value: str) -> bool:
        if self.values is not None:
            return value in self.values
        return self.regex is None or self.regex.fullmatch(value) is not None


@dataclasses.dataclass(frozen=True, slots=True)
class Rule:
    name: str
    pattern: str
    sha256: str | None = None
    params: tuple[ParamRule, ...] | None = None
    rest: ParamRule | None = None
    max_params: int | None = None
    env: frozenset[str] | None = None
    cwd: tuple[str, ...] | None = None
    max_timeout: float | None = None
    max_memory: int | None = None

    def matches(self, exe: str) -> bool:
        if not _WILDCARDS.search(self.pattern):
            return exe == self.pattern
        want, have = self.pattern.split("/"), exe.split("/")
        return len(want) == len(have) and all(map(fnmatch.fnmatchcase, have, want))

    def refusal(
        self, spec: PayloadSpec, resolved: Resolved, declared_env: frozenset[str] = frozenset()
    ) -> str | None:
        """Why this rule refuses `spec` (whose file it matches), or None when it allows it.

        `declared_env` names variables a named action sets itself: the caller chose none of
        them (at most a secret's value), so the rule's environment list does not apply.
        """
        return (
            self._digest(spec, resolved)
            or self._params(spec, resolved)
            or self._env(spec, declared_env)
            or self._cwd(spec, resolved)
            or self._caps(spec, resolved)
        )

    def _digest(self, spec: PayloadSpec, resolved: Resolved) -> str | None:
        if self.sha256 is None or self.sha256 == resolved.sha256:
            return None
        return f"{resolved.exe} has sha256 {resolved.sha256}, not the pinned {self.sha256}"

    def _params(self, spec: PayloadSpec, resolved: Resolved) -> str | None:
        if self.max_params is not None and len(spec.params) > self.max_params:
            return f"{len(spec.params)} params, at most {self.max_params} allowed"
        listed = self.params or ()
        for i, value in enumerate(spec.params):
            rule = listed[i] if i < len(listed) else self.rest
            if rule is None:
                if self.params is None:
                    return None
                return f"param {i} is not allowed: the rule lists {len(listed)}"
            if not rule.accepts(value):
                return f"param {i} {value!r} is not allowed"
        return None

    def _env(self, spec: PayloadSpec, declared_env: frozenset[str]) -> str | None:
        for name in [*(spec.env or {}), *(spec.secret_env or {})]:
            if name in declared_env:
                continue
            if self.env is None:
                return f"env {name} is not accepted: the rule lists no env names, so it takes none"
            if name in self.env:
                continue
            if not any(fnmatch.fnmatchcase(name, entry) for entry in self.env):
                return f"env {name} is not one the rule accepts"
            if (entry := envhooks.hook(name)) is not None:
                return (
                    f"env {name} ({entry}) can change what the program does: "
                    "a rule admits it only by its exact name"
                )
        return None

    def _cwd(self, spec: PayloadSpec, resolved: Resolved) -> str | None:
        if resolved.cwd is None:
            return None
        for root in self.cwd or ():
            if resolved.cwd == root or resolved.cwd.startswith(root.rstrip("/") + "/"):
                return None
        return f"cwd {resolved.cwd} is not under a directory the rule names"

    def _caps(self, spec: PayloadSpec, resolved: Resolved) -> str | None:
        if self.max_timeout is not None and (spec.timeout or 0) > self.max_timeout:
            return f"timeout {spec.timeout:g} is over the rule's {self.max_timeout:g}"
        memory = spec.limits.memory_bytes if spec.limits is not None else None
        if self.max_memory is not None and (memory or 0) > self.max_memory:
            return f"limits.memory_bytes {memory} is over the rule's {self.max_memory}"
        return None


@dataclasses.dataclass(frozen=True, slots=True)
class Policy:
    rules: tuple[Rule, ...]

    def evaluate(
        self, spec: PayloadSpec, resolved: Resolved, declared_env: frozenset[str] = frozenset()
    ) -> Decision:
        """Allowed by the first matching rule that accepts the spec, else refused."""
        exe, sha = resolved.exe, resolved.sha256
        first_refusal: Decision | None = None
        for rule in self.rules:
            if not rule.matches(exe):
                continue
            why = rule.refusal(spec, resolved, declared_env)
            if why is None:
                reason = f"allowed by {rule.name}"
                return Decision(
                    True,
                    rule.name,
                    reason,
                    exe,
                    sha,
                    rule.max_timeout,
                    rule.max_memory,
                    pinned=rule.sha256 is not None,
                )
            first_refusal = first_refusal or Decision(False, rule.name, why, exe, sha)
        if first_refusal is not None:
            return first_refusal
        return Decision(False, None, f"no rule allows {exe}", exe, sha)


def unresolved(spec: PayloadSpec, reason: str) -> Decision:
    """The refusal for a command that does not resolve to a file exec could run."""
    return Decision(False, None, f"{spec.cmd!r} does not resolve to a runnable file: {reason}")


# -- loading -----------------------------------------------------------------------------


def rule_path(text: str, paths: Paths) -> str:
    """A rule's path resolved as commands are: bare names on the payloads' PATH, then realpath.

    With wildcards, only the directories before the first wildcard segment are resolved.
    """
    if not text:
        raise PolicyError("an empty command pattern")
    if not _WILDCARDS.search(text):
        if "/" not in text:
            try:
                return paths.which(text)
            except LookupError as exc:
                raise PolicyError(f"{text!r} is {exc}") from exc
        return paths.canonical(text)
    if not text.startswith("/"):
        raise PolicyError(f"{text!r}: a pattern with wildcards must be an absolute path")
    parts = text.split("/")
    fixed = next(i for i, part in enumerate(parts) if _WILDCARDS.search(part))
    fixed_part = paths.canonical("/".join(parts[:fixed]) or "/")
    return "/".join([fixed_part.rstrip("/"), *parts[fixed:]])


def _param_rule(data: Any, where: str) -> ParamRule:
    if not isinstance(data, dict) or len(data) != 1 or not {"regex", "values"} & data.keys():
        raise PolicyError(f'{where}: expected {{regex = "..."}} or {{values = [...]}}')
    if "values" in data:
        return ParamRule(values=frozenset(_strings(data["values"], where)))
    try:
        return ParamRule(regex=re.compile(str(data["regex"])))
    except re.error as exc:
        raise PolicyError(f"{where}: bad regex: {exc}") from exc


def _strings(value: Any, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise PolicyError(f"{where}: expected a list of strings")
    return value


_KEYS = {"name", "cmd", "sha256", "params", "rest", "max_params", "env", "cwd"}
_KEYS |= {"max_timeout", "max_memory"}


def _rule(data: Any, index: int, paths: Paths) -> Rule:
    if not isinstance(data, dict):
        raise PolicyError(f"rule {index}: expected a table")
    name = str(data.get("name") or f"rule {index}")
    if unknown := set(data) - _KEYS:
        raise PolicyError(f"{name}: unknown keys {sorted(unknown)}")
    if not isinstance(data.get("cmd"), str):
        raise PolicyError(f"{name}: cmd must be a string")
    params = data.get("params")
    sha = data.get("sha256")
    return Rule(
        name=name,
        pattern=rule_path(data["cmd"], paths),
        sha256=str(sha).lower() if sha is not None else None,
        params=(
            tuple(_param_rule(p, f"{name}: params[{i}]") for i, p in enumerate(params))
            if isinstance(params, list)
            else None
        ),
        rest=_param_rule(data["rest"], f"{name}: rest") if "rest" in data else None,
        max_params=_int(data.get("max_params"), name),
        env=frozenset(_strings(data["env"], f"{name}: env")) if "env" in data else None,
        cwd=(
            tuple(paths.canonical(d) for d in _strings(data["cwd"], f"{name}: cwd"))
            if "cwd" in data
            else None
        ),
        max_timeout=float(data["max_timeout"]) if "max_timeout" in data else None,
        max_memory=_int(data.get("max_memory"), name),
    )


def _int(value: Any, where: str) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or value < 0:
        raise PolicyError(f"{where}: expected a non-negative integer, got {value!r}")
    return value


def load(
    allow: Sequence[str], policy_file: str | os.PathLike[str] | None, paths: Paths
) -> Policy | None:
    """The policy from `--allow` patterns and a TOML file; None when neither is given."""
    rules: list[Rule] = [Rule(f"--allow {text}", rule_path(text, paths)) for text in allow]
    if policy_file is not None:
        try:
            with open(policy_file, "rb") as f:
                data = tomllib.load(f)
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise PolicyError(f"{policy_file}: {exc}") from exc
        rules.extend(_rules(data.get("rule", []), paths))
    return Policy(tuple(rules)) if allow or policy_file is not None else None


def _rules(items: Iterable[Any], paths: Paths) -> list[Rule]:
    if not isinstance(items, list):
        raise PolicyError("`rule` must be an array of tables ([[rule]])")
    return [_rule(item, i, paths) for i, item in enumerate(items)]
