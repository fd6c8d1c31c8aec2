"""The service: the one owner of lifecycle rules. It never sees HTTP.

Each active payload has one task (`_drive`) that starts it, records its output and its end.
Only that task writes the payload's record, in order, so records need no lock.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import AsyncIterator
from typing import Any

from pericles.changes import Changes
from pericles.errors import ServiceUnavailable
from pericles.feed import StatusFeed
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
from pericles.store.output import Piece

log = logging.getLogger("pericles.service")


class Service:
    def __init__(self, settings: Settings, store: Store, runner: Runner) -> None:
        self._settings = settings
        self._store = store
        self._runner = runner
        self._accepting = True
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._executions: dict[str, Execution] = {}
        # Woken on every change of a payload: its output or its status.
        self._changes = Changes()
        self.feed = StatusFeed()

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
        self._published(record)
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
        self._published(new)
        return new

    def _published(self, record: Payload) -> None:
        log.debug("payload %s: %s (pid %s)", record.id, record.status, record.pid)
        self.feed.publish(record)
        self._changes.notify(record.id)
        if record.terminal:
            self._changes.forget(record.id)

    async def _record_output(self, record: Payload, event: Output) -> Payload:
        total, dropped = await self._store.append_output(record.id, event.stream, event.data)
        if event.stream == "stdout":
            record = dataclasses.replace(record, stdout_bytes=total, stdout_dropped=dropped)
        else:
            record = dataclasses.replace(record, stderr_bytes=total, stderr_dropped=dropped)
        await self._store.put(record)
        self._changes.notify(record.id)
        return record

    async def wait(self, payload_id: str, timeout: float) -> Payload:
        """The record once terminal, or as it is after `timeout` seconds."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            version = self._changes.version(payload_id)
            record = await self._store.get(payload_id)
            remaining = deadline - asyncio.get_running_loop().time()
            if record.terminal or remaining <= 0:
                return record
            await self._changes.wait(payload_id, version, remaining)

    async def read_output(self, payload_id: str, stream: str, offset: int) -> tuple[bytes, int]:
        return await self._store.read_output(payload_id, stream, offset)

    async def output_positions(self, payload_id: str, offset: int) -> dict[str, int]:
        return await self._store.output_positions(payload_id, offset)

    async def follow(
        self,
        payload_id: str,
        positions: dict[str, int],
        seen: Status | None = None,
        heartbeat: float = 15.0,
    ) -> AsyncIterator[Payload | Piece | None]:
        """A payload's output from `positions` on and its status changes, until it ends.

        Yields the record whenever its state differs from the last one yielded (starting
        from `seen`), output pieces in the order they were read, and None after
        `heartbeat` seconds of quiet. The last item is the terminal record, after all output.
        Readers pull from the store at their own pace and hold nothing: one that falls behind
        the kept output sees a jump in offsets where bytes were dropped.
        """
        while True:
            version = self._changes.version(payload_id)
            # Read the record before the output: once it is terminal, all output is stored.
            record = await self._store.get(payload_id)
            if record.state != seen and not record.terminal:
                seen = record.state
                yield record
            pieces = await self._store.output_pieces(payload_id, positions)
            for piece in pieces:
                positions[piece.stream] = piece.offset + len(piece.data)
                yield piece
            if record.terminal:
                if record.state != seen:
                    yield record
                return
            if not pieces and not await self._changes.wait(payload_id, version, heartbeat):
                yield None

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
                    record = await self._record_output(record, event)
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
