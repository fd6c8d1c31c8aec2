"""What the server is exposed to, said once at start: policy, users, and their risks."""

from __future__ import annotations

import logging

from pericles.policy import Policy
from pericles.process import RunAs, is_root

log = logging.getLogger("pericles.security")


def log_posture(policy: Policy | None, run_as: RunAs | None) -> None:
    if policy is None:
        log.warning("no command policy (--allow, --policy): any command may run")
    else:
        names = ", ".join(rule.name for rule in policy.rules) or "none"
        log.info("command policy: %d rule(s): %s", len(policy.rules), names)
    if run_as is not None:
        log.info("payloads run as uid %d gid %d (--run-as %s)", run_as.uid, run_as.gid, run_as.text)
    elif is_root():
        log.warning("running as root without --run-as: payloads run as root")
