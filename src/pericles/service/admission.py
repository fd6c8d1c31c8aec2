"""The one owner of "what may this spec ask": a spec and its caller in, one answer out.

The answer is a `Refusal` (a problem type, the fields at fault, why) or an `Admitted` spec:
the spec as it will run, with what it left open filled in, in this order:

0. a `secret_env` value found in any other field (`cmd`, `params`, `env`, `labels`, `cwd`,
   `stdin`, names included) refuses the spec alone, before any other check could quote
   that field: those fields are stored, shown and logged. The error names the field and
   the secret's name, never the value;
1. the server's size limits (`--max-params`, `--max-param-length`, `--max-env-bytes`,
   `--max-stdin`) and what the runner can give (a `cwd` that exists);
2. the command policy: the first rule that matches the resolved file and accepts the spec
   as asked (a rule's `max_timeout`/`max_memory` bound what is asked; a spec that asks
   nothing is never refused by a cap);
3. the caps: a value asked over a server cap is refused; a value not asked becomes the
   tightest cap there is, the rule's or the server's (`--max-timeout`, `--max-memory`...).

A pending payload keeps its `Admitted`. When it starts, the runner opens its file and cwd
again and starts it only if they are still the ones admitted (path, SHA-256, directory:
`runner.check_target`): the file may have changed while the payload waited; the rest of
the decision has not.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from pericles.errors import FieldError, InvalidSpec, PericlesError, PolicyDenied
from pericles.model import STDIN_PIPE, Limits, PayloadSpec, Resolved
from pericles.policy import NO_POLICY, Decision, Policy, unresolved
from pericles.runner import Runner, StartFailed
from pericles.settings import Settings


@dataclasses.dataclass(frozen=True, slots=True)
class Refusal:
    """Why a spec may not run. `problem` is the problem type the API answers with."""

    problem: Literal["invalid-spec", "policy-denied"]
    errors: tuple[FieldError, ...]
    #: The policy's answer, for a policy refusal.
    decision: Decision | None = None

    def error(self) -> PericlesError:
        if self.decision is not None:
            return PolicyDenied(self.decision.rule, self.decision.reason)
        return InvalidSpec(errors=self.errors)


@dataclasses.dataclass(frozen=True, slots=True)
class Admitted:
    """A spec the server will run, as it will run it."""

    spec: PayloadSpec
    #: The file the policy matched and its digest; None without a policy (resolved at start).
    resolved: Resolved | None
    #: The policy's answer (`NO_POLICY` without one): the rule that allowed it, and why.
    decision: Decision
    #: Who asked: the token's name, None without auth.
    caller: str | None = None


def _kept_texts(spec: PayloadSpec) -> list[tuple[str, str]]:
    """Every text of `spec` that the server keeps or shows, with its field (dotted path)."""
    texts = [("cmd", spec.cmd), *((f"params.{i}", p) for i, p in enumerate(spec.params))]
    for field, mapping in (("env", spec.env), ("labels", spec.labels)):
        for key, value in (mapping or {}).items():
            # The name is checked first: the value's own error quotes it as its field.
            texts += [(field, key), (f"{field}.{key}", value)]
    texts += [(field, v) for field, v in (("cwd", spec.cwd), ("stdin", spec.stdin)) if v]
    return texts


def _secret_errors(spec: PayloadSpec) -> list[FieldError]:
    """The fields of `spec` that hold one of its own secret_env values."""
    if not spec.secret_env:
        return []
    secrets = {name: v.get_secret_value() for name, v in spec.secret_env.items()}
    for field, text in _kept_texts(spec):
        for name, value in secrets.items():
            if value in text:
                where = f"a name in {field}" if field in ("env", "labels") else field
                msg = f"{where} contains the value of secret_env {name}: give it only there"
                return [FieldError(field, msg)]
    return []


def _limits_of(spec: PayloadSpec) -> dict[str, int]:
    return spec.limits.given() if spec.limits is not None else {}


class Admission:
    def __init__(self, settings: Settings, runner: Runner, policy: Policy | None) -> None:
        self._settings = settings
        self._runner = runner
        #: Which commands may run; None: any (the seed's behaviour).
        self._policy = policy

    async def decide(
        self,
        spec: PayloadSpec,
        caller: str | None = None,
        declared_env: frozenset[str] = frozenset(),
    ) -> Admitted | Refusal:
        """Whether `spec` may run for `caller`, and as what; starts and stores nothing.

        `declared_env` names the variables a named action sets itself (its `env` and its
        secret arguments): the caller chose none of those names, so the policy accepts them.
        """
        leaks = _secret_errors(spec)
        if leaks:
            return Refusal("invalid-spec", tuple(leaks))
        errors = [*self._size_errors(spec), *self._runner.check(spec)]
        if errors:
            return Refusal("invalid-spec", tuple(errors))
        decision, resolved = await self._decide(spec, declared_env)
        if not decision.allowed:
            return Refusal("policy-denied", (FieldError("cmd", decision.reason),), decision)
        capped = self._capped(spec, decision)
        if isinstance(capped, Refusal):
            return capped
        return Admitted(capped, resolved, decision, caller)

    async def admit(
        self,
        spec: PayloadSpec,
        caller: str | None = None,
        declared_env: frozenset[str] = frozenset(),
    ) -> Admitted:
        """`decide`, raising the refusal: `InvalidSpec` or `PolicyDenied`."""
        answer = await self.decide(spec, caller, declared_env)
        if isinstance(answer, Refusal):
            raise answer.error()
        return answer

    async def again(self, spec: PayloadSpec, file: Resolved | None, caller: str | None) -> Admitted:
        """A spec another process admitted (an API replica), judged again by this process's
        own policy just before it starts here (a celery worker): the last line, on the host
        where it runs. `file` is what that API admitted, if its policy resolved one.

        Raises `StartFailed` naming the refusing rule when this policy refuses the spec.
        """
        if self._policy is None:
            return Admitted(spec, file, NO_POLICY, caller)
        decision, resolved = await self._decide(spec)
        if not decision.allowed:
            rule = f" (rule {decision.rule})" if decision.rule else ""
            raise StartFailed(f"refused by the worker's command policy{rule}: {decision.reason}")
        # The file judged here is the one to run; the runner checks it did not change since.
        return Admitted(spec, file or resolved, decision, caller)

    async def for_start(self, admitted: Admitted) -> Resolved:
        """The file to run and its cwd: the ones admitted, for the runner to open and check
        (`Runner.start`, `runner.check_target`); resolved now when no policy judged one."""
        was = admitted.resolved
        if was is None:
            return await self._runner.identify(admitted.spec)
        # The runner starts exactly this: argv[0] the judged file, from the hashed
        # descriptor when the rule pins it, in the judged directory. Opening it here too
        # would only check it a moment earlier, and cost a third open per payload.
        return dataclasses.replace(was, judged=True, pinned=admitted.decision.pinned)

    # -- the steps -------------------------------------------------------------------------

    def _size_errors(self, spec: PayloadSpec) -> list[FieldError]:
        """What in a well-formed spec is over the server's size limits."""
        settings = self._settings
        errors = []
        if len(spec.params) > settings.max_params:
            errors.append(FieldError("params", f"more than {settings.max_params} (--max-params)"))
        longest = settings.max_param_length
        named = [("cmd", spec.cmd), *((f"params.{i}", p) for i, p in enumerate(spec.params))]
        for loc, value in named:
            if len(value.encode()) > longest:
                errors.append(FieldError(loc, f"longer than {longest} bytes (--max-param-length)"))
        if spec.env is not None:
            size = sum(len(k.encode()) + len(v.encode()) for k, v in spec.env.items())
            if size > settings.max_env_bytes:
                limit = settings.max_env_bytes
                errors.append(FieldError("env", f"{size} bytes, over {limit} (--max-env-bytes)"))
        if spec.stdin is not None and spec.stdin != STDIN_PIPE:
            size = len(spec.stdin.encode())
            if size > settings.max_stdin:
                limit = settings.max_stdin
                errors.append(FieldError("stdin", f"{size} bytes is over the limit of {limit}"))
        return errors

    async def _decide(
        self, spec: PayloadSpec, declared_env: frozenset[str] = frozenset()
    ) -> tuple[Decision, Resolved | None]:
        if self._policy is None:
            return NO_POLICY, None
        try:
            resolved = await self._runner.identify(spec)
        except StartFailed as exc:
            return unresolved(spec, exc.reason), None
        return self._policy.evaluate(spec, resolved, declared_env), resolved

    def _caps(self, decision: Decision) -> dict[str, tuple[float | None, float | None]]:
        """Per capped field: (the rule's cap, the server's cap)."""
        settings = self._settings
        return {
            "timeout": (decision.max_timeout, settings.max_timeout),
            "limits.cpu_seconds": (None, settings.max_cpu_seconds),
            "limits.memory_bytes": (decision.max_memory, settings.max_memory),
            "limits.max_processes": (None, settings.max_processes),
            "limits.max_open_files": (None, settings.max_open_files),
            "limits.max_file_size": (None, settings.max_file_size),
        }

    def _capped(self, spec: PayloadSpec, decision: Decision) -> PayloadSpec | Refusal:
        """`spec` with its caps applied, or the refusal of a value asked over a server cap.

        A value over the rule's cap never gets here: the rule refused the spec already.
        """
        limits = _limits_of(spec)
        asked: dict[str, float | None] = {"timeout": spec.timeout}
        asked.update((f"limits.{name}", value) for name, value in limits.items())
        values: dict[str, float] = {}
        errors = []
        for field, (rule_cap, server_cap) in self._caps(decision).items():
            value = asked.get(field)
            if value is None:
                caps = [cap for cap in (rule_cap, server_cap) if cap is not None]
                if caps:
                    values[field] = min(caps)
            elif server_cap is not None and value > server_cap:
                errors.append(
                    FieldError(field, f"{value:g} is over the server's cap of {server_cap:g}")
                )
        if errors:
            return Refusal("invalid-spec", tuple(errors))
        return _filled(spec, values)


def _filled(spec: PayloadSpec, values: dict[str, float]) -> PayloadSpec:
    """`spec` with the fields it left open set to `values` (dotted names)."""
    if not values:
        return spec
    changes: dict[str, object] = {}
    if "timeout" in values:
        changes["timeout"] = values.pop("timeout")
    if values:
        limits = {**_limits_of(spec), **{k[len("limits.") :]: int(v) for k, v in values.items()}}
        changes["limits"] = Limits.model_validate(limits)
    return spec.model_copy(update=changes)
