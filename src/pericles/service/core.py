"""The service: the one owner of lifecycle rules. It never sees HTTP.

A new payload waits in the pending queue until a running slot is free (`--max-running`),
highest priority first. Once it leaves the queue it is a `Run` (`service.run`), which
starts it, records its output and its end, and stops it when asked or when a timer fires.
Every record write goes through `Records.move` (`service.records`).
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import dataclasses
import functools
import logging
from collections.abc import AsyncIterator

from pericles.errors import (
    AlreadyTerminal,
    DeliveryNotFound,
    InvalidSignal,
    NotRunning,
    PayloadNotFound,
    ServiceUnavailable,
    StillActive,
)
from pericles.feed import StatusFeed
from pericles.lifecycle.idempotency import IdempotencyKeys
from pericles.lifecycle.locks import Locks
from pericles.lifecycle.queue import PendingQueue
from pericles.lifecycle.retention import Retention
from pericles.metrics import Metrics
from pericles.model import (
    ALLOWED_SIGNALS,
    Delivery,
    Invocation,
    ListQuery,
    Page,
    Payload,
    PayloadSpec,
    Piece,
    Status,
    new_id,
    signal_name,
    utcnow,
)
from pericles.outbound.sender import Sender
from pericles.policy import Decision, Policy
from pericles.runner import Runner
from pericles.service.admission import Admission, Admitted
from pericles.service.callbacks import Callbacks
from pericles.service.door import Door
from pericles.service.following import follow, wait_for_end
from pericles.service.records import Records, check_transition
from pericles.service.recovery import Waiting, recover
from pericles.service.run import Run
from pericles.settings import Settings
from pericles.store import Store

log = logging.getLogger("pericles.service")


class Service:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        runner: Runner,
        metrics: Metrics | None = None,
        policy: Policy | None = None,
        shared: bool = False,
        sender: Sender | None = None,
        callback_secrets: dict[str, str] | None = None,
    ) -> None:
        """`shared`: the store is shared with other processes (see `Records`)."""
        self._settings = settings
        self._runner = runner
        self._admission = Admission(settings, runner, policy)
        self._records = Records(
            store, Retention(settings.keep_finished, settings.keep_for), metrics, shared
        )
        self._accepting = True
        #: Set once the server begins to stop: waits answer at once (see `stop_waiting`).
        self.stopping = False
        self._queue: PendingQueue[Waiting] = PendingQueue()
        # Payloads whose action's lock others hold wait here, not in the queue.
        self._locks: Locks[Waiting] = Locks()
        #: The limit each lock was last asked with (a record keeps only the lock's name).
        self._lock_limits: dict[str, int] = {}
        self._runs: dict[str, Run] = {}
        self._door = Door(
            settings.max_pending,
            self._has_slot,
            lambda: self.pending_count,
            lambda: self._accepting,
        )
        self._keys = IdempotencyKeys(settings.keep_finished + settings.max_pending + 1024)
        #: Without a sender (the in-process tests), no callback is ever sent.
        self._callbacks = (
            Callbacks(settings, store, sender, metrics, callback_secrets)
            if sender is not None
            else None
        )
        if self._callbacks is not None:
            self._records.listeners.append(self._callbacks.published)

    @property
    def store(self) -> Store:
        return self._records.store

    @property
    def feed(self) -> StatusFeed:
        return self._records.feed

    @property
    def active_count(self) -> int:
        return len(self._runs) + self.pending_count

    @property
    def containment(self) -> str:
        """How a payload's processes are kept together: "cgroup" or "session"."""
        return self._runner.containment()

    @property
    def running_count(self) -> int:
        return len(self._runs)

    @property
    def pending_count(self) -> int:
        return len(self._queue) + len(self._locks)

    async def unready_reason(self) -> str | None:
        """Why the service cannot take payloads now, or None when it can."""
        if not self._accepting:
            return "the server is shutting down"
        try:
            await self.store.ping()
        except Exception as exc:
            # The detail goes to unauthenticated callers: no path or error text there.
            log.warning("not ready: the store is unusable: %s", exc)
            return "store unavailable"
        try:
            await self._runner.ping()
        except Exception as exc:
            return f"the runner is unusable: {exc}"
        return None

    # -- create, queue, start -------------------------------------------------------------

    async def create(
        self,
        spec: PayloadSpec,
        idempotency_key: str | None = None,
        created_by: str | None = None,
        invocation: Invocation | None = None,
    ) -> Payload:
        """Store a new pending payload and queue its start; returns the pending record.

        `created_by` names who asked (the token's name), recorded as given. `invocation` is
        the named action that rendered `spec`: the record shows it, and its lock holds.

        With an `idempotency_key` seen in the last 24 h, returns that key's payload instead.
        Raises `InvalidSpec` for what the server's caps or runner refuse, `ServiceUnavailable`
        when shutting down or when `max_pending` payloads wait already.
        """
        if not self._accepting:
            raise ServiceUnavailable("the server is shutting down")
        if idempotency_key is not None and (first := await self._by_key(idempotency_key)):
            return first
        declared = invocation.declared_env if invocation is not None else frozenset()
        admitted = await self._admission.admit(spec, created_by, declared)
        self._check_room()
        await self._door.enter()
        record = Payload.from_spec(admitted.spec, new_id(), utcnow(), created_by, invocation)
        record = self._pending(record, admitted)
        if invocation is not None and invocation.lock is not None:
            self._lock_limits[invocation.lock] = invocation.lock_limit
        # Noted before the first await, so a concurrent retry with the key finds this payload.
        if idempotency_key is not None:
            self._keys.put(idempotency_key, record.id)
        await self._store_new(record, admitted)
        return await self._enqueue(record, admitted)

    def _check_room(self) -> None:
        """Raise `ServiceUnavailable` when `max_pending` payloads wait already."""
        if not self._has_slot() and self.pending_count >= self._settings.max_pending:
            raise ServiceUnavailable(
                f"{self.pending_count} payloads are waiting already (--max-pending)",
                retry_after=1,
            )

    async def _store_new(self, record: Payload, admitted: Admitted) -> None:
        """Keep a new pending record (and publish it)."""
        await self._records.add(record)

    def _pending(self, record: Payload, admitted: Admitted) -> Payload:
        """The pending record to store for an admitted spec."""
        return record

    async def _enqueue(self, record: Payload, admitted: Admitted) -> Payload:
        """Queue a stored pending payload's start; its record as answered to the client."""
        self._queue.push(record.id, admitted.spec.priority, (record, admitted))
        self._schedule()
        return record

    async def check(self, spec: PayloadSpec) -> Decision:
        """What create() would say of `spec` under the policy; starts and stores nothing.

        Raises `InvalidSpec` for what create() would refuse before asking the policy.
        """
        answer = await self._admission.decide(spec)
        if answer.decision is None:
            raise answer.error()
        return answer.decision

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
            record, admitted = waiting
            if record.lock is not None:
                limit = self._lock_limits.get(record.lock, 1)
                if not self._locks.take(record.lock, limit, record.id):
                    self._locks.wait(record.lock, record.id, waiting)
                    continue
            self._start(record, admitted)

    def _start(self, record: Payload, admitted: Admitted) -> Run:
        self._door.open()  # it starts now: room for one held request
        run = Run(
            record,
            admitted,
            self._records,
            self._runner,
            self._admission.for_start,
            self._settings.kill_grace,
            lambda: self._accepting,
        )
        self._runs[record.id] = run
        run.task.add_done_callback(functools.partial(self._on_run_done, run))
        return run

    @property
    def running_ids(self) -> builtins.list[str]:
        return list(self._runs)

    def _on_run_done(self, run: Run, task: asyncio.Task[None]) -> None:
        self._runs.pop(run.payload_id, None)
        self._unlock(run.record)
        run.closed()
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("payload %s: driving it failed", run.payload_id, exc_info=exc)
        self._schedule()

    def _unlock(self, record: Payload) -> None:
        """Let go of the payload's lock, if it holds one; the next in line queues to start."""
        if record.lock is None:
            return
        following = self._locks.release(record.lock, record.id)
        if following is not None:
            self._queue.push(following[0].id, following[1].spec.priority, following)

    # -- reading -------------------------------------------------------------------------

    async def get(self, payload_id: str) -> Payload:
        record = await self.store.get(payload_id)
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
        for record in (await self.store.query(ListQuery())).records:
            found[record.state] += 1
        return found

    async def page(self, query: ListQuery) -> Page:
        """The records `query` asks for; pending ones show their place in the queue."""
        page = await self.store.query(query)
        if not self._runs and not self._queue and not self._locks:
            return page
        # Positions cost O(queue): only worked out when the page shows a pending record.
        pending = any(r.state is Status.PENDING for r in page.records)
        positions = self._queue.positions() if pending and self._queue else {}
        records = [
            self._with_queue_info(r, positions.get(r.id))
            if r.state is Status.PENDING
            else self._live(r)
            for r in page.records
        ]
        return Page(records, page.more)

    def _live(self, record: Payload) -> Payload:
        """`record` with the output counts of its running process laid over it."""
        run = self._runs.get(record.id)
        counts = run.count_fields() if run is not None else None
        return dataclasses.replace(record, **counts) if counts else record

    def _with_queue_info(self, record: Payload, position: int | None) -> Payload:
        if position is None:
            return self._with_lock_info(record)
        reason = f"waiting for a free slot: {len(self._runs)} running (--max-running)"
        return dataclasses.replace(record, queue_position=position, pending_reason=reason)

    def _with_lock_info(self, record: Payload) -> Payload:
        waiting = self._locks.waiting_for(record.id)
        if waiting is None:
            return record
        lock, holders, place = waiting
        held_by = ", ".join(holders) or "none"
        reason = f"waiting for lock {lock!r}, held by {held_by} ({place} in line for it)"
        return dataclasses.replace(record, pending_reason=reason)

    # -- output and following -------------------------------------------------------------

    async def wait(self, payload_id: str, timeout: float) -> Payload:
        """The record once terminal, or as it is after `timeout` seconds, or as it is when
        the server begins to stop."""
        return await wait_for_end(
            self.get, self._records.changes, payload_id, timeout, lambda: self.stopping
        )

    def stop_waiting(self) -> None:
        """The server begins to stop: every wait answers now, with the record as it is.

        Called as the HTTP server stops taking connections, before it lets the requests in
        flight finish. A long wait (`?wait=`, MCP's `run` and `wait`) would otherwise hold
        that drain until its bound ran out and the request was cancelled mid-answer.
        Event streams (a payload's and the status feed) end too, for the same reason: an
        open stream never ends by itself. Their clients resume elsewhere (another replica,
        or this one restarted) from their last event id.
        """
        self.stopping = True
        self._records.changes.close()  # wakes every waiter, as notify_all
        self._records.feed.close()

    async def read_output(self, payload_id: str, stream: str, offset: int) -> tuple[bytes, int]:
        return await self.store.read_output(payload_id, stream, offset)

    async def output_positions(self, payload_id: str, offset: int) -> dict[str, int]:
        return await self.store.output_positions(payload_id, offset)

    def follow(
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
        return follow(
            self.get, self.store, self._records.changes, payload_id, positions, seen, heartbeat
        )

    # -- cancel, delete, signals, stdin ---------------------------------------------------

    async def cancel(self, payload_id: str, why: str = "cancel") -> Payload:
        """Cancel a payload: a pending one never starts, a running one is stopped.

        Returns its record once it has ended; raises `AlreadyTerminal` when it had already.
        """
        waiting = self._queue.remove(payload_id) or self._locks.remove(payload_id)
        if waiting is not None:
            self._door.open()
            self._unlock(waiting[0])  # a lock passed on to it, not yet started
            self._schedule()
            return await self._records.move(
                waiting[0], Status.CANCELLED, finished_at=utcnow(), stop_reason=why
            )
        run = self._runs.get(payload_id)
        if run is None:
            record = await self.store.get(payload_id)
            check_transition(record, Status.CANCELLED)
            return record
        if run.record.terminal:
            raise AlreadyTerminal(payload_id, run.record.status, Status.CANCELLED.value)
        run.stop(Status.CANCELLED, None, why)
        return await run.ended()

    async def delete(self, payload_id: str, force: bool = False) -> None:
        """Forget an ended payload and its output; `force` cancels an active one first."""
        record = await self.get(payload_id)
        if not record.terminal or payload_id in self._runs:
            if not force:
                raise StillActive(payload_id, record.status)
            with contextlib.suppress(AlreadyTerminal):
                await self.cancel(payload_id, why="delete")
        await self._records.forget(payload_id)

    async def _running(self, payload_id: str, action: str) -> Run:
        run = self._runs.get(payload_id)
        if run is None or not run.started:
            record = await self.get(payload_id)
            if record.terminal:
                raise AlreadyTerminal(payload_id, record.status, action)
            raise NotRunning(payload_id, record.status, action)
        return run

    async def send_signal(self, payload_id: str, asked: str) -> Payload:
        """Send an allowed signal ("SIGUSR1", "usr1") to the payload's process group.

        SIGSTOP makes a working payload `paused`, SIGCONT makes a paused one `working`.
        Raises `InvalidSignal` for a signal not in `model.ALLOWED_SIGNALS`.
        """
        name = self._allowed_signal(asked)
        run = await self._running(payload_id, f"be sent {name}")
        return await run.signal(name)

    @staticmethod
    def _allowed_signal(asked: str) -> str:
        """The allowed signal's name for `asked`; raises `InvalidSignal`."""
        name = signal_name(asked)
        if name is None:
            allowed = ", ".join(sorted(ALLOWED_SIGNALS))
            raise InvalidSignal(f"signal {asked!r} is not allowed; use one of {allowed}")
        return name

    async def write_stdin(self, payload_id: str, data: bytes, close: bool = False) -> None:
        """Queue `data` for a payload's stdin pipe, then close it if `close`."""
        run = await self._running(payload_id, "take stdin")
        run.write_stdin(data, close)

    # -- callback deliveries -------------------------------------------------------------

    async def deliveries(self, payload_id: str) -> builtins.list[Delivery]:
        """A payload's callback deliveries and their attempts, oldest first."""
        return await self.store.deliveries(payload_id)

    async def redeliver(self, payload_id: str, delivery_id: str) -> Delivery:
        """Send a delivery's event again, as a new delivery; raises `DeliveryNotFound`."""
        if self._callbacks is None:
            await self.store.deliveries(payload_id)  # PayloadNotFound when it is unknown
            raise DeliveryNotFound(payload_id, delivery_id)
        return await self._callbacks.redeliver(payload_id, delivery_id)

    # -- start and shutdown --------------------------------------------------------------

    async def recover(self) -> None:
        """Take up the payloads a durable store kept (`service.recovery`); call once, before
        serving."""
        # Senders first: deliveries the store kept are queued before recovery adds more.
        if self._callbacks is not None:
            await self._callbacks.resume()
        await recover(self._records, self._runner, self._admission, self._queue)
        self._schedule()

    async def shutdown(self, grace: float) -> None:
        """Refuse new payloads, stop every running one (TERM, `grace`, KILL) and record its end."""
        self._accepting = False
        self._door.open_all()  # held requests: answered 503 now
        pending = self.pending_count
        while (waiting := self._queue.pop()) is not None:
            await self._records.move(
                waiting[0], Status.CANCELLED, finished_at=utcnow(), stop_reason="shutdown"
            )
        for waiting in self._locks.drain():
            await self._records.move(
                waiting[0], Status.CANCELLED, finished_at=utcnow(), stop_reason="shutdown"
            )
        runs = list(self._runs.values())
        running = [run.execution for run in runs if run.execution is not None]
        log.info("shutdown: stopping %d running payload(s), %d pending", len(running), pending)
        await asyncio.gather(*(run.shut_down(grace) for run in runs if run.execution is not None))
        # Runs not started yet see `_accepting` is off and end their payload as cancelled.
        await asyncio.gather(*(run.task for run in runs), return_exceptions=True)
        self._records.close()
        if self._callbacks is not None:
            # Deliveries not sent yet stay in the store (a durable one sends them next start).
            await self._callbacks.close()
        log.info("shutdown: every payload has ended")
