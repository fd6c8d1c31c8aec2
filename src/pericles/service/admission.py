"""What a spec may ask: the server's caps, the runner's check, the command policy.

`admit` is asked once, when a payload is created; `for_start` again just before it starts,
since the file may have changed while the payload waited.
"""

from __future__ import annotations

from pericles.errors import PolicyDenied
from pericles.lifecycle.caps import apply_caps
from pericles.model import PayloadSpec
from pericles.policy import NO_POLICY, Decision, Policy, unresolved, with_rule_caps
from pericles.runner import Resolved, Runner, StartFailed
from pericles.settings import Settings


class Admission:
    def __init__(self, settings: Settings, runner: Runner, policy: Policy | None) -> None:
        self._settings = settings
        self._runner = runner
        #: Which commands may run; None: any (the seed's behaviour).
        self._policy = policy

    async def admit(self, spec: PayloadSpec) -> PayloadSpec:
        """`spec` as it will run, caps applied; raises `InvalidSpec` or `PolicyDenied`."""
        spec = apply_caps(spec, self._settings)
        self._runner.check(spec)
        if self._policy is None:
            return spec
        decision = await self._decide(spec)
        if not decision.allowed:
            raise PolicyDenied(decision.rule, decision.reason)
        return with_rule_caps(spec, decision)

    async def check(self, spec: PayloadSpec) -> Decision:
        """What `admit` would say of `spec` under the policy; starts and stores nothing."""
        spec = apply_caps(spec, self._settings)
        self._runner.check(spec)
        return await self._decide(spec)

    async def _decide(self, spec: PayloadSpec) -> Decision:
        if self._policy is None:
            return NO_POLICY
        try:
            resolved = await self._runner.identify(spec)
        except StartFailed as exc:
            return unresolved(spec, exc.reason)
        return self._policy.evaluate(spec, resolved)

    async def for_start(self, spec: PayloadSpec) -> Resolved:
        """The file to run, checked again: it may have changed while the payload waited."""
        resolved = await self._runner.identify(spec)
        if self._policy is not None:
            decision = self._policy.evaluate(spec, resolved)
            if not decision.allowed:
                raise StartFailed(f"refused by the command policy: {decision.reason}")
        return resolved
