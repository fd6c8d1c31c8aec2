"""The service: the one owner of lifecycle rules. It never sees HTTP.

A new payload waits in the pending queue until a running slot is free (`--max-running`),
highest priority first. Once it leaves the queue it has a `_Run`: one task (`_drive`) that
starts it and records its output and its end, plus the timers that may stop it. Every
record write goes through `_move`, which checks the move against `model.TRANSITIONS`.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import dataclasses
import functools
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from pericles.changes import Changes
from pericles.errors import (
    AlreadyTerminal,
    InvalidSpec,
    NotRunning,
    PayloadNotFound,
    PolicyDenied,
    ServiceUnavailable,
    StdinUnavailable,
    StillActive,
)
from pericles.feed import StatusFeed
from pericles.lifecycle.caps import apply_caps
from pericles.lifecycle.idempotency import IdempotencyKeys
from pericles.lifecycle.queue import PendingQueue
from pericles.lifecycle.recovery import by_end, spec_of
from pericles.lifecycle.retention import Retention
from pericles.metrics import Metrics
from pericles.model import (
    ALLOWED_SIGNALS,
    STDIN_PIPE,
    Payload,
    PayloadSpec,
    Status,
    check_transition,
    new_id,
    start_error,
    utcnow,
)
from pericles.policy import NO_POLICY, Decision, Policy, unresolved, with_rule_caps
from pericles.redact import Redactor
from pericles.runner import Execution, Exited, Output, Resolved, Runner, StartFailed
from pericles.settings import Settings
from pericles.store import ListQuery, Page, Store
from pericles.store.output import STREAMS, Piece

log = logging.getLogger("pericles.service")


def _log_transition(record: Payload) -> None:
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


@dataclasses.dataclass(eq=False)
class _Run:
    """What the service holds for a payload from leaving the queue until it ends."""

    record: Payload
    spec: PayloadSpec
    # Serialises record writes for this payload between its drive task and the requests
    # (signal) that move it; it does not cover the process, which `process` guards itself.
    lock: asyncio.Lock = dataclasses.field(default_factory=asyncio.Lock)
    task: asyncio.Task[None] | None = None
    execution: Execution | None = None
    #: The terminal status asked for (cancelled or timeout) and the timeout's reason.
    stop: tuple[Status, str | None] | None = None
    stopping: asyncio.Task[None] | None = None
    wall_timer: asyncio.TimerHandle | None = None
    idle_timer: asyncio.TimerHandle | None = None
    last_output: float = 0.0
    #: Masks the spec's secret_env values in its output; None when it has none.
    redactor: Redactor | None = None
    #: Per stream, (bytes written, bytes dropped) so far. They change with every read of the
    #: pipes, too often for a new record each time: readers see them laid over the record
    #: (`_live`), and every transition stores them.
    counts: dict[str, tuple[int, int]] = dataclasses.field(default_factory=dict)


class Service:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        runner: Runner,
        metrics: Metrics | None = None,
        policy: Policy | None = None,
    ) -> None:
        self._settings = settings
        #: Which commands may run; None: any (the seed's behaviour).
        self._policy = policy
        self._metrics = metrics
        self._store = store
        self._runner = runner
        self._accepting = True
        self._queue: PendingQueue[tuple[Payload, PayloadSpec]] = PendingQueue()
        self._runs: dict[str, _Run] = {}
        self._retention = Retention(settings.keep_finished, settings.keep_for)
        self._retention_timer: asyncio.TimerHandle | None = None
        self._keys = IdempotencyKeys(settings.keep_finished + settings.max_pending + 1024)
        self._background: set[asyncio.Task[None]] = set()
        # Woken on every change of a payload: its output or its status.
        self._changes = Changes()
        self.feed = StatusFeed()

    @property
    def store(self) -> Store:
        return self._store

    @property
    def active_count(self) -> int:
        return len(self._runs) + len(self._queue)

    async def unready_reason(self) -> str | None:
        """Why the service cannot take payloads now, or None when it can."""
        if not self._accepting:
            return "the server is shutting down"
        try:
            await self._store.ping()
        except Exception as exc:
            return f"the store is unusable: {exc}"
        try:
            await self._runner.ping()
        except Exception as exc:
            return f"the runner is unusable: {exc}"
        return None

    @property
    def running_count(self) -> int:
        return len(self._runs)

    @property
    def pending_count(self) -> int:
        return len(self._queue)

    # -- create, queue, start -------------------------------------------------------------

    async def create(
        self, spec: PayloadSpec, idempotency_key: str | None = None, created_by: str | None = None
    ) -> Payload:
        """Store a new pending payload and queue its start; returns the pending record.

        `created_by` names who asked (the token's name), recorded as given.

        With an `idempotency_key` seen in the last 24 h, returns that key's payload instead.
        Raises `InvalidSpec` for what the server's caps or runner refuse, `ServiceUnavailable`
        when shutting down or when `max_pending` payloads wait already.
        """
        if not self._accepting:
            raise ServiceUnavailable("the server is shutting down")
        if idempotency_key is not None and (first := await self._by_key(idempotency_key)):
            return first
        spec = apply_caps(spec, self._settings)
        self._runner.check(spec)
        spec = await self._admit(spec)
        if not self._has_slot() and len(self._queue) >= self._settings.max_pending:
            raise ServiceUnavailable(
                f"{len(self._queue)} payloads are waiting already (--max-pending)", retry_after=1
            )
        record = Payload.from_spec(spec, new_id(), utcnow(), created_by)
        # Noted before the first await, so a concurrent retry with the key finds this payload.
        if idempotency_key is not None:
            self._keys.put(idempotency_key, record.id)
        await self._store.add(record)
        self._published(record, None)
        self._queue.push(record.id, spec.priority, (record, spec))
        self._schedule()
        return record

    async def check(self, spec: PayloadSpec) -> Decision:
        """What create() would say of `spec` under the policy; starts and stores nothing."""
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

    async def _admit(self, spec: PayloadSpec) -> PayloadSpec:
        """`spec` with its rule's caps applied; raises `PolicyDenied` when the policy refuses it."""
        if self._policy is None:
            return spec
        decision = await self._decide(spec)
        if not decision.allowed:
            raise PolicyDenied(decision.rule, decision.reason)
        return with_rule_caps(spec, decision)

    async def _by_key(self, key: str) -> Payload | None:
        payload_id = self._keys.get(key)
        if payload_id is None:
            return None
        try:
            return await self.get(payload_id)
        except PayloadNotFound:  # deleted or evicted since: the key is free again
            self._keys.discard(key)
            return None

    def _has_slot(self) -> bool:
        limit = self._settings.max_running
        return limit == 0 or len(self._runs) < limit

    def _schedule(self) -> None:
        while self._accepting and self._has_slot():
            waiting = self._queue.pop()
            if waiting is None:
                return
            record, spec = waiting
            run = _Run(record, spec)
            if spec.secret_env:
                run.redactor = Redactor(spec.secret_values())
            self._runs[record.id] = run
            run.task = asyncio.create_task(self._drive(run), name=f"payload-{record.id}")
            run.task.add_done_callback(functools.partial(self._on_run_done, run))

    def _on_run_done(self, run: _Run, task: asyncio.Task[None]) -> None:
        self._runs.pop(run.record.id, None)
        for timer in (run.wall_timer, run.idle_timer):
            if timer is not None:
                timer.cancel()
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("payload %s: driving it failed", run.record.id, exc_info=exc)
        self._schedule()

    # -- reading -------------------------------------------------------------------------

    async def get(self, payload_id: str) -> Payload:
        record = await self._store.get(payload_id)
        if record.state is Status.PENDING:
            return self._with_queue_info(record, self._queue.position(payload_id))
        return self._live(record)

    async def list(self) -> builtins.list[Payload]:
        """Every record, oldest first."""
        return (await self.page(ListQuery())).records

    async def counts(self) -> dict[Status, int]:
        """How many records are in each state.

        Straight from the store: `page` would dress every pending record with its queue
        place, which costs a new record each (270 ms for 10,000 pending, against 5 ms).
        """
        found = dict.fromkeys(Status, 0)
        for record in (await self._store.query(ListQuery())).records:
            found[record.state] += 1
        return found

    async def page(self, query: ListQuery) -> Page:
        """The records `query` asks for; pending ones show their place in the queue."""
        page = await self._store.query(query)
        if not self._runs and not self._queue:
            return page
        positions = self._queue.positions() if self._queue else {}
        records = [
            self._with_queue_info(r, positions.get(r.id))
            if r.state is Status.PENDING
            else self._live(r)
            for r in page.records
        ]
        return Page(records, page.more)

    def _live(self, record: Payload) -> Payload:
        """`record` with the output counts of its running process laid over it."""
        counts = self._counts(record.id)
        return dataclasses.replace(record, **counts) if counts else record

    def _counts(self, payload_id: str) -> dict[str, Any]:
        run = self._runs.get(payload_id)
        if run is None:
            return {}
        fields: dict[str, Any] = {}
        for stream, (total, dropped) in run.counts.items():
            fields[f"{stream}_bytes"] = total
            fields[f"{stream}_dropped"] = dropped
        return fields

    def _with_queue_info(self, record: Payload, position: int | None) -> Payload:
        if position is None:
            return record
        reason = f"waiting for a free slot: {len(self._runs)} running (--max-running)"
        return dataclasses.replace(record, queue_position=position, pending_reason=reason)

    # -- the one place a record changes --------------------------------------------------

    async def _move(
        self, record: Payload, wanted: Status, status: str | None = None, **changes: Any
    ) -> Payload:
        check_transition(record, wanted)
        changes = {**self._counts(record.id), **changes}
        new = dataclasses.replace(record, status=status or wanted.value, **changes)
        await self._store.put(new)
        self._published(new, record.state)
        if new.terminal:
            await self._evict(self._retention.add(new.id))
            self._arm_retention_timer()
        return new

    def _published(self, record: Payload, before: Status | None) -> None:
        _log_transition(record)
        if self._metrics is not None:
            self._metrics.transition(record, before)
        self.feed.publish(record)
        self._changes.notify(record.id)
        if record.terminal:
            self._changes.forget(record.id)

    # -- output and following -------------------------------------------------------------

    async def _record_output(self, run: _Run, event: Output) -> None:
        # Secrets are masked here, before the store: offsets and counts are of masked output.
        data = event.data if run.redactor is None else run.redactor.feed(event.stream, event.data)
        if data:
            await self._store_output(run, event.stream, data)

    async def _flush_output(self, run: _Run) -> None:
        if run.redactor is not None:
            for stream in ("stdout", "stderr"):
                if data := run.redactor.flush(stream):
                    await self._store_output(run, stream, data)

    async def _store_output(self, run: _Run, stream: str, data: bytes) -> None:
        payload_id = run.record.id
        total, dropped = await self._store.append_output(payload_id, stream, data)
        if self._metrics is not None:
            self._metrics.output(stream, len(data))
        run.counts[stream] = (total, dropped)
        self._changes.notify(payload_id)

    async def wait(self, payload_id: str, timeout: float) -> Payload:
        """The record once terminal, or as it is after `timeout` seconds."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            version = self._changes.version(payload_id)
            record = await self.get(payload_id)
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
            record = await self.get(payload_id)
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

    # -- running -------------------------------------------------------------------------

    async def _drive(self, run: _Run) -> None:
        payload_id = run.record.id
        if not self._accepting or run.stop is not None:
            run.record = await self._move(run.record, Status.CANCELLED, finished_at=utcnow())
            return
        try:
            resolved = await self._resolve_for_start(run.spec)
            execution = await self._runner.start(payload_id, run.spec, resolved)
        except StartFailed as exc:
            log.info("payload %s: could not start %r: %s", payload_id, run.spec.cmd, exc.reason)
            run.record = await self._move(
                run.record,
                Status.ERROR,
                status=start_error(run.spec.cmd, exc.reason),
                finished_at=utcnow(),
            )
            return
        run.execution = execution
        started = time.monotonic()
        async with run.lock:
            run.record = await self._move(
                run.record,
                Status.WORKING,
                pid=execution.pid,
                started_at=utcnow(),
                exe=resolved.exe,
                exe_sha256=resolved.sha256,
            )
        self._arm_timers(run)
        if run.stop is not None:  # cancelled while it was starting
            self._begin_stop(run)
        async for event in execution.events():
            if isinstance(event, Output):
                run.last_output = time.monotonic()
                await self._record_output(run, event)
            elif isinstance(event, Exited):
                await self._flush_output(run)
                await self._end(run, event, time.monotonic() - started)

    async def _resolve_for_start(self, spec: PayloadSpec) -> Resolved:
        """The file to run, checked again: it may have changed while the payload waited."""
        resolved = await self._runner.identify(spec)
        if self._policy is not None:
            decision = self._policy.evaluate(spec, resolved)
            if not decision.allowed:
                raise StartFailed(f"refused by the command policy: {decision.reason}")
        return resolved

    async def _end(self, run: _Run, event: Exited, duration: float) -> None:
        wanted, reason = run.stop or (Status.FINISHED, None)
        async with run.lock:
            run.record = await self._move(
                run.record,
                wanted,
                exit_code=event.exit_code,
                signal=event.signal,
                finished_at=utcnow(),
                timeout_reason=reason,
                cpu_user_seconds=event.cpu_user_seconds,
                cpu_system_seconds=event.cpu_system_seconds,
                max_rss_bytes=event.max_rss_bytes,
                duration_seconds=round(duration, 6),
            )

    # -- stopping: cancel and timeouts ----------------------------------------------------

    def _arm_timers(self, run: _Run) -> None:
        loop = asyncio.get_running_loop()
        if run.spec.timeout is not None:
            run.wall_timer = loop.call_later(
                run.spec.timeout, self._stop, run, Status.TIMEOUT, "wall"
            )
        if run.spec.idle_timeout is not None:
            run.last_output = time.monotonic()
            run.idle_timer = loop.call_later(run.spec.idle_timeout, self._check_idle, run)

    def _check_idle(self, run: _Run) -> None:
        idle = run.spec.idle_timeout
        if idle is None or run.stop is not None:
            return
        now = time.monotonic()
        if run.record.state is Status.PAUSED:  # a stopped process cannot write: not idle
            run.last_output = now
        remaining = run.last_output + idle - now
        if remaining <= 0:
            self._stop(run, Status.TIMEOUT, "idle")
        else:
            run.idle_timer = asyncio.get_running_loop().call_later(remaining, self._check_idle, run)

    def _stop(self, run: _Run, status: Status, reason: str | None) -> None:
        """Ask a started payload to end as `status`: TERM, its kill grace, then KILL."""
        if run.stop is not None:
            return
        log.info("payload %s: stopping it as %s %s", run.record.id, status.value, reason or "")
        run.stop = (status, reason)
        if run.execution is not None:
            self._begin_stop(run)

    def _begin_stop(self, run: _Run) -> None:
        if run.execution is None or run.stopping is not None:
            return
        grace = run.spec.kill_grace
        run.stopping = asyncio.create_task(
            run.execution.terminate(self._settings.kill_grace if grace is None else grace)
        )

    async def cancel(self, payload_id: str) -> Payload:
        """Cancel a payload: a pending one never starts, a running one is stopped.

        Returns its record once it has ended; raises `AlreadyTerminal` when it had already.
        """
        waiting = self._queue.remove(payload_id)
        if waiting is not None:
            return await self._move(waiting[0], Status.CANCELLED, finished_at=utcnow())
        run = self._runs.get(payload_id)
        if run is None or run.task is None:
            record = await self._store.get(payload_id)
            check_transition(record, Status.CANCELLED)
            return record
        if run.record.terminal:
            raise AlreadyTerminal(payload_id, run.record.status, Status.CANCELLED.value)
        self._stop(run, Status.CANCELLED, None)
        # Not shielded by the request: wait() never cancels the task it watches.
        await asyncio.wait({run.task})
        return run.record

    async def delete(self, payload_id: str, force: bool = False) -> None:
        """Forget an ended payload and its output; `force` cancels an active one first."""
        record = await self.get(payload_id)
        if not record.terminal or payload_id in self._runs:
            if not force:
                raise StillActive(payload_id, record.status)
            with contextlib.suppress(AlreadyTerminal):
                await self.cancel(payload_id)
        self._retention.forget(payload_id)
        with contextlib.suppress(PayloadNotFound):
            await self._store.delete(payload_id)
        self._changes.forget(payload_id)

    # -- signals and stdin ---------------------------------------------------------------

    async def _running(self, payload_id: str, action: str) -> tuple[_Run, Execution]:
        run = self._runs.get(payload_id)
        if run is None or run.execution is None or run.record.terminal:
            record = await self.get(payload_id)
            if record.terminal:
                raise AlreadyTerminal(payload_id, record.status, action)
            raise NotRunning(payload_id, record.status, action)
        return run, run.execution

    async def send_signal(self, payload_id: str, name: str) -> Payload:
        """Send an allowed signal to the payload's process group.

        SIGSTOP makes a working payload `paused`, SIGCONT makes a paused one `working`.
        """
        if name not in ALLOWED_SIGNALS:
            raise InvalidSpec(f"signal {name!r} is not one of {sorted(ALLOWED_SIGNALS)}")
        run, execution = await self._running(payload_id, f"be sent {name}")
        async with run.lock:
            state = run.record.state
            if not execution.send_signal(name) or run.record.terminal:
                return run.record
            if name == "SIGSTOP" and state is Status.WORKING:
                run.record = await self._move(run.record, Status.PAUSED)
            elif name == "SIGCONT" and state is Status.PAUSED:
                run.last_output = time.monotonic()
                run.record = await self._move(run.record, Status.WORKING)
            return run.record

    async def write_stdin(self, payload_id: str, data: bytes, close: bool = False) -> None:
        """Queue `data` for a payload's stdin pipe, then close it if `close`."""
        run, execution = await self._running(payload_id, "take stdin")
        if run.spec.stdin != STDIN_PIPE:
            raise StdinUnavailable(f'payload {payload_id} was not created with "stdin": "pipe"')
        execution.write_stdin(data, close)

    # -- retention -----------------------------------------------------------------------

    async def _evict(self, payload_ids: builtins.list[str]) -> None:
        for payload_id in payload_ids:
            with contextlib.suppress(PayloadNotFound):
                await self._store.delete(payload_id)

    def _arm_retention_timer(self) -> None:
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
            task = asyncio.create_task(self._evict(due))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        self._arm_retention_timer()

    # -- start: what an earlier server left in a durable store ----------------------------

    async def recover(self) -> None:
        """Take up the payloads a durable store kept; call once, before serving.

        Pending payloads never ran: they queue again in their order. Working or paused ones
        were running when the earlier server died: what is left of their process group is
        killed (only in the same boot: after a reboot their pids mean other processes), and
        they become `lost`. Ended ones count towards retention from when they ended.
        """
        boot = self._runner.host_boot()
        same_boot = boot is not None and boot == await self._store.get_meta("boot_id")
        if boot is not None:
            await self._store.set_meta("boot_id", boot)
        records = await self._store.list()
        evict: builtins.list[str] = []
        for payload_id, age in by_end(records, utcnow()):
            evict += self._retention.add(payload_id, age)
        await self._evict(evict)
        for record in records:
            if record.state is Status.PENDING:
                await self._requeue(record)
            elif record.state in (Status.WORKING, Status.PAUSED):
                await self._lose(record, same_boot)
        if records:
            log.info("recovered %d payload(s): %d pending", len(records), len(self._queue))
        self._arm_retention_timer()
        self._schedule()

    async def _requeue(self, record: Payload) -> None:
        if record.secret_env_names:
            # Secret values live only in the memory of the server that took them.
            reason = "its secret_env values are not kept across a restart"
            await self._move(
                record, Status.ERROR, status=start_error(record.cmd, reason), finished_at=utcnow()
            )
            return
        try:
            spec = spec_of(record)
        except InvalidSpec as exc:
            await self._move(
                record, Status.ERROR, status=start_error(record.cmd, str(exc)), finished_at=utcnow()
            )
            return
        self._queue.push(record.id, spec.priority, (record, spec))

    async def _lose(self, record: Payload, same_boot: bool) -> None:
        if same_boot and record.pid is not None and record.started_at is not None:
            killed = self._runner.kill_leftovers(record.pid, record.started_at.timestamp())
            if killed:
                log.warning("payload %s: killed %d leftover process(es)", record.id, killed)
        # Its counts were stored at its last transition; its output, until the crash.
        counts: dict[str, Any] = {}
        for stream in STREAMS:
            kept, dropped = await self._store.read_output(record.id, stream, 0)
            counts[f"{stream}_bytes"] = len(kept) + dropped
            counts[f"{stream}_dropped"] = dropped
        await self._move(record, Status.LOST, finished_at=utcnow(), **counts)

    # -- shutdown ------------------------------------------------------------------------

    async def shutdown(self, grace: float) -> None:
        """Refuse new payloads, stop every running one (TERM, `grace`, KILL) and record its end."""
        self._accepting = False
        pending = len(self._queue)
        while (waiting := self._queue.pop()) is not None:
            await self._move(waiting[0], Status.CANCELLED, finished_at=utcnow())
        runs = list(self._runs.values())
        running = [run.execution for run in runs if run.execution is not None]
        log.info("shutdown: stopping %d running payload(s), %d pending", len(running), pending)
        await asyncio.gather(*(execution.terminate(grace) for execution in running))
        # Runs not started yet see `_accepting` is off and end their payload as cancelled.
        await asyncio.gather(*(run.task for run in runs if run.task), return_exceptions=True)
        if self._retention_timer is not None:
            self._retention_timer.cancel()
        log.info("shutdown: every payload has ended")
