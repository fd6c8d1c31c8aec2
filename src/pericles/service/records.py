"""The one write path for records: every change is checked, stored, then published.

`Records.move` checks a move against `model.TRANSITIONS`, stores the new record, and tells
everyone who watches (the log, metrics, the status feed, waiting readers, then `listeners`:
the callback engine). An ended record joins retention, which forgets it later. Output is
appended here too, so readers are woken by the same notifier whatever changed.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Callable, Iterable
from typing import Any

from pericles.changes import Changes
from pericles.errors import AlreadyTerminal, InvalidTransition, PayloadNotFound
from pericles.feed import StatusFeed
from pericles.lifecycle.retention import Retention
from pericles.metrics import Metrics
from pericles.model import TERMINAL, TRANSITIONS, Payload, Status
from pericles.store import Store

log = logging.getLogger("pericles.service")


def check_transition(record: Payload, wanted: Status) -> None:
    """Raise unless `record` may move to `wanted` (`model.TRANSITIONS`); names both states."""
    current = record.state
    if wanted in TRANSITIONS[current]:
        return
    error = AlreadyTerminal if current in TERMINAL else InvalidTransition
    raise error(record.id, record.status, wanted.value)


def _log_transition(record: Payload) -> None:
    if not log.isEnabledFor(logging.INFO):
        return  # nothing to build when the level is off
    # The command, never its params or environment: those may carry secrets.
    fields: dict[str, object] = {
        "payload_id": record.id,
        "cmd": record.cmd,
        "status": record.status,
        "pid": record.pid,
    }
    if record.terminal:
        fields["exit_code"] = record.exit_code
        fields["duration_seconds"] = record.duration_seconds
    log.info(
        "payload %s %s (cmd %r, pid %s, exit code %s)",
        record.id,
        record.status,
        record.cmd,
        record.pid,
        record.exit_code,
        extra={"pericles": fields},
    )


class Records:
    """The store behind the service's rules: writes, their publication, and retention."""

    def __init__(
        self,
        store: Store,
        retention: Retention,
        metrics: Metrics | None,
        shared: bool = False,
    ) -> None:
        self.store = store
        self._retention = retention
        #: The store is shared with other processes (celery workers, API replicas): each
        #: sees only some ends, so none evicts by what it saw, and readers here hear of
        #: changes from the store's own change feed (`heard`), not from this process.
        self._shared = shared
        self._retention_timer: asyncio.TimerHandle | None = None
        self._metrics = metrics
        self._background: set[asyncio.Task[None]] = set()
        #: Woken on every change of a payload: its output or its status.
        self.changes = Changes()
        self.feed = StatusFeed()
        #: Told of every write after the above, in order (the callback engine, if any).
        self.listeners: list[Callable[[Payload, Status | None], None]] = []

    async def add(self, record: Payload) -> None:
        """Keep a new pending record and publish it."""
        await self.store.add(record)
        self.published(record, None)

    async def move(
        self, record: Payload, wanted: Status, status: str | None = None, **changes: Any
    ) -> Payload:
        """`record` moved to `wanted` (wire text `status`, if given) with `changes`, stored."""
        check_transition(record, wanted)
        before = record.state
        new = dataclasses.replace(record, status=status or wanted.value, **changes)
        # Compare and set: raises `StaleRecord` when another process moved it first.
        await self.store.put(new, before=before)
        self.published(new, before)
        if new.terminal and not self._shared:
            await self.evict(self._retention.add(new.id))
            self.arm_retention_timer()
        return new

    def published(self, record: Payload, before: Status | None) -> None:
        """Tell the log and the metrics of a change (and, unless shared, readers here)."""
        _log_transition(record)
        if self._metrics is not None:
            self._metrics.transition(record, before)
        if not self._shared:
            self.heard(record)
        # Writes made here only: with a shared store, each change is told by its writer once.
        for listener in self.listeners:
            listener(record, before)

    def heard(self, record: Payload) -> None:
        """Wake readers of a change: made here, or by another process (a shared store)."""
        self.feed.publish(record)
        self.changes.notify(record.id)
        if record.terminal:
            self.changes.forget(record.id)

    async def append_output(self, payload_id: str, stream: str, data: bytes) -> tuple[int, int]:
        """Keep `data` as the next output of `stream`; (bytes written, bytes dropped) so far."""
        counts = await self.store.append_output(payload_id, stream, data)
        if self._metrics is not None:
            self._metrics.output(stream, len(data))
        if not self._shared:
            self.changes.notify_output(payload_id)
        return counts

    async def forget(self, payload_id: str) -> None:
        """Drop an ended payload's record and output now (a delete)."""
        self._retention.forget(payload_id)
        with contextlib.suppress(PayloadNotFound):
            await self.store.delete(payload_id)
        self.changes.forget(payload_id)

    # -- retention -----------------------------------------------------------------------

    def ended(self, payload_id: str, age: float) -> list[str]:
        """Note a payload that ended `age` seconds ago; the ids retention lets go of now."""
        return self._retention.add(payload_id, age)

    async def evict(self, payload_ids: Iterable[str]) -> None:
        for payload_id in payload_ids:
            with contextlib.suppress(PayloadNotFound):
                await self.store.delete(payload_id)

    def arm_retention_timer(self) -> None:
        if self._retention_timer is not None:
            return
        delay = self._retention.next_expiry()
        if delay is not None:
            self._retention_timer = asyncio.get_running_loop().call_later(
                delay, self._on_retention_timer
            )

    def _on_retention_timer(self) -> None:
        self._retention_timer = None
        due = self._retention.due()
        if due:
            task = asyncio.create_task(self.evict(due))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        self.arm_retention_timer()

    def close(self) -> None:
        if self._retention_timer is not None:
            self._retention_timer.cancel()
