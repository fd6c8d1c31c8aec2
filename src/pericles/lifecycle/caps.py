"""The server's own caps on what a spec may ask: `--max-timeout`, `--max-memory`, ...

A cap is also the default: a spec that asks nothing gets the cap; one that asks more is
refused. The effective spec is what the payload runs with and what its record shows.
"""

from __future__ import annotations

from pericles.errors import InvalidSpec
from pericles.model import Limits, PayloadSpec
from pericles.settings import Settings


def _limit_caps(settings: Settings) -> dict[str, int | None]:
    return {
        "cpu_seconds": settings.max_cpu_seconds,
        "memory_bytes": settings.max_memory,
        "max_processes": settings.max_processes,
        "max_open_files": settings.max_open_files,
        "max_file_size": settings.max_file_size,
    }


def _capped(name: str, asked: float | None, cap: float | None) -> float | None:
    if cap is None:
        return asked
    if asked is None:
        return cap
    if asked > cap:
        raise InvalidSpec(f"{name}: {asked:g} is over the server's cap of {cap:g}")
    return asked


def apply_caps(spec: PayloadSpec, settings: Settings) -> PayloadSpec:
    """`spec` with the server's caps applied; raises `InvalidSpec` when it asks over one."""
    changes: dict[str, object] = {}
    timeout = _capped("timeout", spec.timeout, settings.max_timeout)
    if timeout != spec.timeout:
        changes["timeout"] = timeout
    asked = spec.limits.given() if spec.limits is not None else {}
    limits = dict(asked)
    for name, cap in _limit_caps(settings).items():
        value = _capped(f"limits.{name}", asked.get(name), cap)
        if value is not None:
            limits[name] = int(value)
    if limits != asked:
        changes["limits"] = Limits.model_validate(limits)
    return spec.model_copy(update=changes) if changes else spec
