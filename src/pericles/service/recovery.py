"""What a server finds in a durable store at start, and what becomes of it.

Pending payloads never ran: they queue again in their order. Working or paused ones were
running when the earlier server died: what is left of their process group is killed (only in
the same boot: after a reboot their pids mean other processes), and they become `lost`.
Ended ones count towards retention from when they ended.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from pydantic import SecretStr, ValidationError

from pericles.errors import InvalidSpec, PolicyDenied
from pericles.lifecycle.queue import PendingQueue
from pericles.model import STREAMS, Payload, PayloadSpec, Status, start_error, utcnow
from pericles.runner import Runner
from pericles.service.admission import Admission, Admitted
from pericles.service.records import Records

log = logging.getLogger("pericles.service")

_SPEC_FIELDS = (
    "cmd",
    "params",
    "env",
    "cwd",
    "stdin",
    "timeout",
    "idle_timeout",
    "kill_grace",
    "limits",
    "labels",
    "priority",
    "keep_descendants",
    "queue",
)


def spec_of(record: Payload) -> PayloadSpec:
    """The spec a pending record was created from (records echo their spec, caps applied).

    Raises `InvalidSpec` when it is no longer valid (a record written by another version).
    """
    fields = {name: getattr(record, name) for name in _SPEC_FIELDS}
    try:
        return PayloadSpec.model_validate({k: v for k, v in fields.items() if v is not None})
    except ValidationError as exc:
        raise InvalidSpec(f"payload {record.id}: its stored spec is not valid: {exc}") from exc


def with_secrets(
    record: Payload, spec: PayloadSpec, secrets: Mapping[str, str] | None, missing: str
) -> PayloadSpec:
    """`spec` with the secret_env values its message carried (a celery worker's payload):
    exactly the names its record lists. Raises `InvalidSpec` (why: `missing`, when none
    came) otherwise: it must not run without them, nor with others."""
    names = record.secret_env_names or []
    if not names and not secrets:
        return spec
    if secrets is None:
        raise InvalidSpec(f"its secret_env values {missing}")
    if sorted(secrets) != sorted(names):
        raise InvalidSpec("its secret_env values are not the ones its record names")
    values = {name: SecretStr(value) for name, value in secrets.items()}
    return spec.model_copy(update={"secret_env": values})


def by_end(records: Iterable[Payload], now: datetime) -> list[tuple[str, float]]:
    """Ended records as (id, seconds since it ended), those that ended first first."""
    ended = [(r.id, (now - (r.finished_at or now)).total_seconds()) for r in records if r.terminal]
    ended.sort(key=lambda item: -item[1])
    return ended


#: A payload waiting in the queue: its pending record and what admission made of its spec.
Waiting = tuple[Payload, Admitted]


async def recover(
    records: Records, runner: Runner, admission: Admission, queue: PendingQueue[Waiting]
) -> None:
    """Take up what a durable store kept: pending ones go to `queue`, running ones are lost.

    A pending one is admitted again: this server's settings and policy may differ.
    """
    store = records.store
    boot = runner.host_boot()
    same_boot = boot is not None and boot == await store.get_meta("boot_id")
    if boot is not None:
        await store.set_meta("boot_id", boot)
    kept = await store.list()
    starting = await store.starting()
    evict: list[str] = []
    for payload_id, age in by_end(kept, utcnow()):
        evict += records.ended(payload_id, age)
    await records.evict(evict)
    for record in kept:
        if record.state is Status.PENDING and record.id in starting:
            # It may have started: never again (at most once). Its processes, if any, die.
            await _lose(records, runner, record, same_boot)
        elif record.state is Status.PENDING:
            await _requeue(records, admission, queue, record)
        elif record.state in (Status.WORKING, Status.PAUSED):
            await _lose(records, runner, record, same_boot)
    if kept:
        log.info("recovered %d payload(s): %d pending", len(kept), len(queue))
    records.arm_retention_timer()


async def _requeue(
    records: Records, admission: Admission, queue: PendingQueue[Waiting], record: Payload
) -> None:
    if record.secret_env_names:
        # Secret values live only in the memory of the server that took them.
        reason = "its secret_env values are not kept across a restart"
    else:
        try:
            # An action's record holds only the environment the action itself declared.
            declared = frozenset(record.env or ()) if record.action else frozenset()
            admitted = await admission.admit(spec_of(record), record.created_by, declared)
        except (InvalidSpec, PolicyDenied) as exc:
            reason = str(exc)
        else:
            queue.push(record.id, admitted.spec.priority, (record, admitted))
            return
    await records.move(
        record, Status.ERROR, status=start_error(record.cmd, reason), finished_at=utcnow()
    )


async def _lose(records: Records, runner: Runner, record: Payload, same_boot: bool) -> None:
    since = record.started_at or record.created_at
    if same_boot and since is not None:
        killed = runner.kill_leftovers(record.id, record.pid, since.timestamp())
        if killed:
            log.warning("payload %s: killed %d leftover process(es)", record.id, killed)
    # Its counts were stored at its last transition; its output, until the crash.
    counts: dict[str, Any] = {}
    for stream in STREAMS:
        kept, dropped = await records.store.read_output(record.id, stream, 0)
        counts[f"{stream}_bytes"] = len(kept) + dropped
        counts[f"{stream}_dropped"] = dropped
    await records.move(record, Status.LOST, finished_at=utcnow(), **counts)
