"""The service: the one owner of lifecycle rules. It never sees HTTP.

Each active payload has one task (`_drive`) that starts it, records its output and its end.
Only that task writes the payload's record, in order, so records need no lock.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from typing import Any

from pericles.errors import ServiceUnavailable
from pericles.model import (
    Payload,
    PayloadSpec,
    Status,
    check_transition,
    new_id,
    start_error,
    utcnow,
)
from pericles.runner import Execution, Exited, Output, Runner, StartFailed
from pericles.settings import Settings
from pericles.store import Store

log = logging.getLogger("pericles.service")


class Service:
    def __init__(self, settings: Settings, store: Store, runner: Runner) -> None:
        self._settings = settings
        self._store = store
        self._runner = runner
        self._accepting = True
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._executions: dict[str, Execution] = {}

    @property
    def store(self) -> Store:
        return self._store

    @property
    def active_count(self) -> int:
        return len(self._tasks)

    async def create(self, spec: PayloadSpec) -> Payload:
        """Store a new pending payload and schedule its start; returns the pending record."""
        if not self._accepting:
            raise ServiceUnavailable("the server is shutting down")
        record = Payload(
            status=Status.PENDING.value,
            cmd=spec.cmd,
            params=list(spec.params),
            id=new_id(),
            created_at=utcnow(),
        )
        await self._store.add(record)
        task = asyncio.create_task(self._drive(record, spec), name=f"payload-{record.id}")
        self._tasks[record.id] = task
        task.add_done_callback(lambda _: self._tasks.pop(record.id, None))
        return record

    async def get(self, payload_id: str) -> Payload:
        return await self._store.get(payload_id)

    async def list(self) -> list[Payload]:
        return await self._store.list()

    async def _move(
        self, record: Payload, wanted: Status, status: str | None = None, **changes: Any
    ) -> Payload:
        check_transition(record, wanted)
        new = dataclasses.replace(record, status=status or wanted.value, **changes)
        await self._store.put(new)
        return new

    async def _drive(self, record: Payload, spec: PayloadSpec) -> None:
        if not self._accepting:
            await self._move(record, Status.CANCELLED, finished_at=utcnow())
            return
        try:
            execution = await self._runner.start(record.id, spec)
        except StartFailed as exc:
            log.info("payload %s: could not start %r: %s", record.id, spec.cmd, exc.reason)
            await self._move(
                record,
                Status.ERROR,
                status=start_error(spec.cmd, exc.reason),
                finished_at=utcnow(),
            )
            return
        self._executions[record.id] = execution
        try:
            record = await self._move(
                record, Status.WORKING, pid=execution.pid, started_at=utcnow()
            )
            async for event in execution.events():
                if isinstance(event, Output):
                    await self._store.append_output(record.id, event.stream, event.data)
                elif isinstance(event, Exited):
                    record = await self._move(
                        record,
                        Status.FINISHED,
                        exit_code=event.exit_code,
                        signal=event.signal,
                        finished_at=utcnow(),
                    )
        finally:
            del self._executions[record.id]

    async def shutdown(self, grace: float) -> None:
        """Refuse new payloads, stop every running one (TERM, `grace`, KILL) and record its end."""
        self._accepting = False
        running = list(self._executions.values())
        pending = len(self._tasks) - len(running)
        log.info("shutdown: stopping %d running payload(s), %d pending", len(running), pending)
        await asyncio.gather(*(execution.terminate(grace) for execution in running))
        # Tasks not started yet see `_accepting` is off and end their payload as cancelled.
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        log.info("shutdown: every payload has ended")
