"""The service of an API replica whose payloads run on celery workers (`--runner celery`).

The rules are the service's own (admission, transitions, reading and following); what
differs is where things happen. A new payload is stored `pending` and sent to the broker;
a worker claims it (`ClaimingService.take`), runs it and records its output and end in the shared
Redis store. This replica learns of every change through the store's change feed, so its
readers, waiters and `/events` see what any worker or replica did. Each replica also runs
the reaper: a payload whose worker stopped renewing its liveness deadline becomes `lost`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Callable

from pericles.errors import (
    AlreadyTerminal,
    NotRunning,
    PayloadNotFound,
    ServiceUnavailable,
    StaleRecord,
    StdinUnavailable,
)
from pericles.metrics import Metrics
from pericles.model import (
    STDIN_PIPE,
    Payload,
    Status,
    utcnow,
)
from pericles.outbound.sender import Sender
from pericles.policy import Policy
from pericles.runner.celery import CeleryRunner
from pericles.service.admission import Admitted
from pericles.service.callbacks import Callbacks
from pericles.service.core import Service
from pericles.service.records import check_transition
from pericles.settings import Settings
from pericles.store.redis import RedisStore

log = logging.getLogger("pericles.service")

_LIVE = (Status.WORKING, Status.PAUSED)
#: How long a signal request waits for the worker to record the pause or resume it causes.
_SIGNAL_WAIT = 5.0
#: Seconds the change listener and the reaper get to stop at shutdown.
_STOP_WITHIN = 2.0


class RemoteService(Service):
    def __init__(
        self,
        settings: Settings,
        store: RedisStore,
        runner: CeleryRunner,
        metrics: Metrics | None = None,
        policy: Policy | None = None,
        sender: Sender | None = None,
        callback_secrets: dict[str, str] | None = None,
    ) -> None:
        super().__init__(
            settings,
            store,
            runner,
            metrics,
            policy,
            shared=True,
            sender=sender,
            callback_secrets=callback_secrets,
        )
        # Callbacks go by what is heard on the change feed (any worker's or replica's
        # write), not by this process's own writes, which the feed brings back too.
        if self._callbacks is not None:
            self._records.listeners.remove(self._callbacks.published)
        self._background: set[asyncio.Task[None]] = set()
        self._redis_store = store
        self._celery = runner
        self._tasks: list[asyncio.Task[None]] = []
        self._counts_cache = {Status.PENDING: 0, Status.WORKING: 0}

    @property
    def running_count(self) -> int:
        return self._counts_cache[Status.WORKING]

    @property
    def pending_count(self) -> int:
        return self._counts_cache[Status.PENDING]

    @property
    def active_count(self) -> int:
        return 0  # nothing runs in this process: shutting it down waits for nothing

    # -- create ---------------------------------------------------------------------------

    def _check_room(self) -> None:
        waiting = self._counts_cache[Status.PENDING]
        if waiting >= self._settings.max_pending:
            raise ServiceUnavailable(
                f"{waiting} payloads are waiting already (--max-pending)", retry_after=1
            )

    def _pending(self, record: Payload, admitted: Admitted) -> Payload:
        # The file the policy admitted goes with the record: the worker checks, on its host,
        # that it runs that file (path and digest), as a local start does.
        file = admitted.resolved
        if file is None:
            return record
        return dataclasses.replace(record, exe=file.exe, exe_sha256=file.sha256)

    async def _store_new(self, record: Payload, admitted: Admitted) -> None:
        # The record and its Celery message in one Redis step: one round trip, and never a
        # record stored but not queued (or a message for no record).
        secrets = admitted.spec.secret_env or {}
        values = {name: value.get_secret_value() for name, value in secrets.items()}
        message = self._celery.message(record, values)
        await self._redis_store.add(record, queued=(message.queue, message.text))
        self._records.published(record, None)

    async def _enqueue(self, record: Payload, admitted: Admitted) -> Payload:
        self._counts_cache[Status.PENDING] += 1
        return record

    # -- what other processes changed -----------------------------------------------------

    async def _listen(self) -> None:
        async for kind, payload_id, record, before in self._redis_store.changes():
            if kind == "o":
                self._records.changes.notify_output(payload_id)
            elif record is not None:
                self._records.heard(record)
                self._callback(record, before)
            elif kind == "s":  # deleted
                self._records.changes.forget(payload_id)
            else:  # reconnected: anything may have changed
                self._records.changes.notify_all()

    # -- callbacks: every replica hears every change; the first to claim its event sends --

    def _callback(self, record: Payload, before: Status | None) -> None:
        callbacks = self._callbacks
        if callbacks is None:
            return
        event = callbacks.wanted(record, before)
        if event is not None:
            task = asyncio.create_task(self._send_once(callbacks, record, before, event))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _send_once(
        self, callbacks: Callbacks, record: Payload, before: Status | None, event: str
    ) -> None:
        try:
            if await self._redis_store.claim_event(record.id, event):
                callbacks.published(record, before)
        except Exception:
            log.exception("payload %s: cannot claim its %s callbacks", record.id, event)

    async def _reap(self) -> None:
        """Every heartbeat: payloads whose worker stopped renewing them become `lost`, and
        ended payloads past `--keep-finished` or `--keep-for` are forgotten (by whichever
        replica gets there first: one script each time, so each is evicted once)."""
        settings = self._settings
        while True:
            await asyncio.sleep(settings.heartbeat)
            try:
                for payload_id in await self._redis_store.expired():
                    await self._lose_expired(payload_id)
                await self._redis_store.evict_ended(settings.keep_finished, settings.keep_for)
                for state in self._counts_cache:
                    self._counts_cache[state] = await self._redis_store.count(state)
                self._counts_cache[Status.WORKING] += await self._redis_store.count(Status.PAUSED)
            except Exception:
                log.exception("reaper: a pass failed; trying again")

    async def _lose_expired(self, payload_id: str) -> None:
        try:
            record = await self.store.get(payload_id)
        except PayloadNotFound:
            return
        if record.state not in _LIVE and not (record.state is Status.PENDING and record.worker):
            return
        check_transition(record, Status.LOST)
        lost = dataclasses.replace(record, status=Status.LOST.value, finished_at=utcnow())
        with contextlib.suppress(StaleRecord):
            if await self._redis_store.put_if_expired(lost, before=record.state):
                log.warning(
                    "payload %s: its worker %s stopped answering: lost", record.id, record.worker
                )
                self._records.published(lost, record.state)

    async def recover(self) -> None:
        """Start following the shared store, and reaping: no payload runs in this process.
        Deliveries left unfinished (by a replica that stopped) are taken up."""
        if self._callbacks is not None:
            await self._callbacks.resume()
        self._tasks = [
            asyncio.create_task(self._listen(), name="store-changes"),
            asyncio.create_task(self._reap(), name="reaper"),
        ]

    async def shutdown(self, grace: float) -> None:
        """Stop taking payloads; those queued or running on workers go on without us."""
        self._accepting = False
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            # Bounded: a task stuck on Redis must not hold the replica's exit.
            _, stuck = await asyncio.wait(self._tasks, timeout=_STOP_WITHIN)
            for task in stuck:
                log.warning("shutdown: %s did not stop within %gs", task.get_name(), _STOP_WITHIN)
        for task in self._background:
            task.cancel()
        if self._callbacks is not None:
            # Deliveries not sent yet stay in Redis: a replica started later takes them up.
            await self._callbacks.close()

    # -- cancel, signals, stdin: sent to the worker that runs the payload ------------------

    async def cancel(self, payload_id: str, why: str = "cancel") -> Payload:
        record = await self.store.get(payload_id)
        if record.state is Status.PENDING and record.worker is None:
            try:
                return await self._records.move(
                    record, Status.CANCELLED, finished_at=utcnow(), stop_reason=why
                )
            except StaleRecord:  # a worker has claimed it: only that worker may end it
                record = await self.store.get(payload_id)
        check_transition(record, Status.CANCELLED)
        await self._redis_store.request_stop(payload_id)
        await self._celery.stop(record)
        grace = record.kill_grace if record.kill_grace is not None else self._settings.kill_grace
        ended = await self.wait(payload_id, grace + 10 + 2 * self._settings.liveness_ttl)
        return ended

    async def send_signal(self, payload_id: str, asked: str) -> Payload:
        name = self._allowed_signal(asked)
        record = await self._running_record(payload_id, f"be sent {name}")
        expect = {
            ("SIGSTOP", Status.WORKING): Status.PAUSED,
            ("SIGCONT", Status.PAUSED): Status.WORKING,
        }.get((name, record.state))
        await self._celery.signal(record, name)
        if expect is None:
            return record
        return await self._wait_for(payload_id, lambda r: r.state is expect or r.terminal)

    async def _wait_for(self, payload_id: str, done: Callable[[Payload], bool]) -> Payload:
        """The record once `done` holds for it, or as it is after `_SIGNAL_WAIT` seconds."""
        deadline = asyncio.get_running_loop().time() + _SIGNAL_WAIT
        changes = self._records.changes
        while True:
            version = changes.record_version(payload_id)
            record = await self.store.get(payload_id)
            remaining = deadline - asyncio.get_running_loop().time()
            if done(record) or remaining <= 0:
                return record
            await changes.wait_record(payload_id, version, remaining)

    async def write_stdin(self, payload_id: str, data: bytes, close: bool = False) -> None:
        record = await self._running_record(payload_id, "take stdin")
        if record.stdin != STDIN_PIPE:
            raise StdinUnavailable(f'payload {payload_id} was not created with "stdin": "pipe"')
        await self._celery.stdin(record, data, close)

    async def _running_record(self, payload_id: str, action: str) -> Payload:
        """The record of a payload whose process runs; a worker that claimed it is given a
        moment to spawn it."""
        record = await self._wait_for(
            payload_id, lambda r: r.state not in _LIVE or r.pid is not None
        )
        if record.terminal:
            raise AlreadyTerminal(payload_id, record.status, action)
        if record.state not in _LIVE or record.pid is None:
            raise NotRunning(payload_id, record.status, action)
        return record
