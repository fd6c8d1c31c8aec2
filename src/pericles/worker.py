"""`pericles worker`: a Celery worker that runs payloads with the local runner's code.

One worker process holds one asyncio loop (in a thread) with a `Service` over the shared
Redis store and a `LocalRunner`: the same spawn, containment, limits, timeouts and output
capture as `handler-serve --runner local`. Celery's threads pool gives it `--slots` payload
slots: each Celery task hands its payload id to the loop and waits for the payload's end.

Beside the payloads the loop runs, per worker process:

- the heartbeat: every `--heartbeat` seconds it renews the liveness deadline of the payloads
  it runs, and stops those whose record is no longer live (found lost) or whose cancel flag
  is set (a control message it missed);
- the control listener: one subscription, to this worker's channel, for cancel, signal and
  stdin of its payloads;
- the host janitor: at start and every few seconds it kills what is left of payloads that
  ran on this host (this boot) and whose record is lost or ended, after checking each
  process's start time: the process groups of a worker that was killed outright.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
import os
import socket
import sys
import threading
from collections.abc import Coroutine, Sequence
from typing import Any

from celery.concurrency.thread import TaskPool as ThreadsPool
from redis.exceptions import RedisError

from pericles import policy as command_policy
from pericles import process
from pericles.errors import PayloadNotFound, PericlesError, SecretsKeyError
from pericles.logs import configure as configure_logging
from pericles.model import PayloadSpec, Resolved
from pericles.runner.base import Execution
from pericles.runner.celery import TASK, Sealer, control_channel, make_app
from pericles.runner.local import LocalRunner
from pericles.service.claiming import ClaimingService
from pericles.settings import Settings
from pericles.store.redis import RedisStore
from pericles.store.redis_keys import host_key

log = logging.getLogger("pericles.worker")

#: Seconds between two passes of the host janitor.
JANITOR_INTERVAL = 2.0
#: States in which a payload this worker runs goes on: "pending" is one it has claimed and
#: not yet moved to working (between the claim and the spawn): stopping it then ended a
#: payload about to start as cancelled.
_LIVE_STATES = ("working", "paused", "pending")
#: The loggers of Celery's per-task lines (received, succeeded).
_CELERY_TASK_LOGGERS = ("celery.worker.strategy", "celery.app.trace")


class WorkerRunner(LocalRunner):
    """The local runner, with this host's set: each payload is noted in it before anything
    is spawned (by the claim, `RedisStore.claim`; by `start` for one it did not claim), so
    the janitor of any worker on this host can find what a dead worker left."""

    def __init__(
        self, store: RedisStore, host: str, settings: Settings, policy: bool = False
    ) -> None:
        super().__init__(
            settings.inherit_env,
            settings.max_stdin,
            payload_path=settings.payload_path,
            own_path_lookup=policy,
        )
        self._store = store
        self.host_key = host_key(f"{host}:{process.boot_id() or 'unknown-boot'}")

    async def start(
        self, payload_id: str, spec: PayloadSpec, resolved: Resolved | None = None
    ) -> Execution:
        if self._store.host_key != self.host_key:
            await self._store.note_host(self.host_key, payload_id)
        return await super().start(payload_id, spec, resolved)


class Worker:
    """What one worker process runs on its loop: a service, its heartbeat, its control
    listener and the host janitor."""

    def __init__(self, settings: Settings, hostname: str) -> None:
        """Raises `PolicyError` or `SecretsKeyError` for a file that cannot be used."""
        self.settings = settings
        self.id = f"{hostname}/{os.getpid()}"
        self.store = RedisStore(settings.store, settings.max_output)
        self.store.ttl_ms = int(settings.liveness_ttl * 1000)
        # The same policy loading as handler-serve's (rules' bare names on the payloads' PATH).
        paths = process.HostPaths(settings.payload_path or process.DEFAULT_PATH)
        policy = command_policy.load(settings.allow, settings.policy, paths)
        self.runner = WorkerRunner(self.store, hostname, settings, policy is not None)
        self.store.host_key = self.runner.host_key
        key_file = settings.secrets_key_file
        self.sealer = Sealer(key_file) if key_file is not None else None
        self.service = ClaimingService(
            settings, self.store, self.runner, policy=policy, shared=True
        )
        self._stopping: set[str] = set()
        self._tasks: list[asyncio.Task[None]] = []

    async def open(self) -> None:
        await self.store.open()
        await self.runner.open()
        await self._sweep()
        self._tasks = [
            asyncio.create_task(self._heartbeat(), name="heartbeat"),
            asyncio.create_task(self._control(), name="control"),
            asyncio.create_task(self._janitor(), name="janitor"),
        ]

    async def close(self) -> None:
        await self.service.shutdown(self.settings.shutdown_grace)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.runner.close()
        await self.store.close()

    async def take(self, payload_id: str, sealed: str | None = None) -> None:
        """A Celery task's work: run the payload to its end, if it is still ours to run.
        `sealed`: its secret_env values, encrypted by the API (see `Sealer`)."""
        secrets, missing = None, "did not reach this worker"
        if sealed is not None and self.sealer is None:
            missing = "cannot be read on this worker: it has no --secrets-key-file"
        elif sealed is not None and self.sealer is not None:
            try:
                secrets = self.sealer.open(payload_id, sealed)
            except SecretsKeyError as exc:
                missing = f"cannot be read on this worker: {exc}"
        await self.service.take(payload_id, self.id, secrets, missing)
        # It ended here and its group was reaped: nothing for the janitor to find.
        with contextlib.suppress(RedisError, OSError):
            await self.store.forget_host(self.runner.host_key, payload_id)

    # -- heartbeat ------------------------------------------------------------------------

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.settings.heartbeat)
            ids = self.service.running_ids
            if not ids:
                continue
            try:
                states = await self.store.renew(ids, self.id)
            except (RedisError, OSError) as exc:
                log.warning("heartbeat: cannot reach Redis: %s", exc)
                continue
            for payload_id, (state, stop) in states.items():
                if stop or state not in _LIVE_STATES:
                    self._stop(payload_id, f"its record is {state or 'gone'}" if not stop else "")

    def _stop(self, payload_id: str, why: str) -> None:
        if payload_id in self._stopping:
            return
        if why:
            log.warning("payload %s: stopping it: %s", payload_id, why)
        self._stopping.add(payload_id)
        task = asyncio.create_task(self._quietly(self.service.cancel(payload_id)))
        task.add_done_callback(lambda _: self._stopping.discard(payload_id))

    @staticmethod
    async def _quietly(action: Coroutine[Any, Any, object]) -> None:
        with contextlib.suppress(PericlesError):
            await action

    # -- control messages -----------------------------------------------------------------

    async def _control(self) -> None:
        while True:
            try:
                async with self.store.redis.pubsub() as pubsub:
                    await pubsub.subscribe(control_channel(self.id))
                    async for message in pubsub.listen():
                        if message["type"] == "message":
                            await self._on_control(message["data"])
            except (RedisError, OSError) as exc:
                task = asyncio.current_task()
                if task is not None and task.cancelling():  # see RedisStore.changes
                    raise asyncio.CancelledError from exc
                log.warning("control: lost the channel (%s); subscribing again", exc)
                await asyncio.sleep(0.5)

    async def _on_control(self, raw: bytes) -> None:
        try:
            message = json.loads(raw)
            op, payload_id = message["op"], message["id"]
        except (ValueError, KeyError, TypeError):
            log.warning("control: ignored a malformed message")
            return
        if op == "cancel":
            self._stop(payload_id, "")
        elif op == "signal":
            task = asyncio.create_task(
                self._quietly(self.service.send_signal(payload_id, str(message.get("signal"))))
            )
            self._tasks.append(task)
        elif op == "stdin":
            with contextlib.suppress(PericlesError, binascii.Error, ValueError):
                data = base64.b64decode(message.get("data", ""), validate=True)
                await self.service.write_stdin(payload_id, data, bool(message.get("close")))

    # -- host janitor ---------------------------------------------------------------------

    async def _janitor(self) -> None:
        while True:
            await asyncio.sleep(JANITOR_INTERVAL)
            try:
                await self._sweep()
            except (RedisError, OSError) as exc:
                log.warning("janitor: cannot reach Redis: %s", exc)

    async def _sweep(self) -> None:
        key = self.runner.host_key
        mine = set(self.service.running_ids)
        for payload_id in await self.store.host_payloads(key):
            if payload_id in mine:
                continue
            try:
                record = await self.store.get(payload_id)
            except PayloadNotFound:
                await self.store.forget_host(key, payload_id)
                continue
            if not record.terminal:
                continue  # its worker is alive, or the reaper has not found it lost yet
            if record.pid is not None and record.started_at is not None:
                killed = process.kill_group(record.pid, record.started_at.timestamp())
                if killed:
                    log.warning(
                        "janitor: killed %d process(es) left by payload %s (%s)",
                        killed,
                        payload_id,
                        record.status,
                    )
            await self.store.forget_host(key, payload_id)


class WakingPool(ThreadsPool):  # type: ignore[misc]
    """Celery's threads pool, waking the worker's event loop each time a slot frees.

    With `worker_disable_prefetch`, the consumer stops asking Redis for messages while every
    slot is taken, and asks again only when its loop next turns; a slot freed by a pool
    thread does not turn it, so a worker with work queued sat idle until some timer fired
    (one worker process drained ~12-27 payloads/s). A byte on a pipe the loop watches,
    written once the task is marked done (the future's callback runs after Celery's own),
    turns it at once.
    """

    _wake_fd: int | None = None

    def register_with_event_loop(self, loop: Any) -> None:
        super().register_with_event_loop(loop)
        read, write = os.pipe()
        os.set_blocking(read, False)
        os.set_blocking(write, False)
        loop.add_reader(read, self._drain, read)
        self._wake_fd = write

    def on_apply(self, *args: Any, **kwargs: Any) -> Any:
        result = super().on_apply(*args, **kwargs)
        if self._wake_fd is not None:
            result.f.add_done_callback(self._wake)
        return result

    def _wake(self, _: object) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._wake_fd or -1, b"\0")

    @staticmethod
    def _drain(fd: int) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            while os.read(fd, 4096):
                pass


def _loop_thread() -> asyncio.AbstractEventLoop:
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, name="payloads", daemon=True).start()
    return loop


def run(settings: Settings, queues: Sequence[str], slots: int, hostname: str | None) -> None:
    """Run a worker until it is told to stop (SIGTERM: warm shutdown, payloads finish)."""
    configure_logging(settings.log_level, settings.log_format)
    if settings.log_level.lower() != "debug":
        # Celery's "Task ... received" and "... succeeded" lines, two per payload (about 3 %
        # of a worker's CPU in a drain): our own lines say when each payload starts and ends.
        for name in _CELERY_TASK_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)
    host = hostname or socket.gethostname()
    try:
        worker = Worker(settings, host)
    except (command_policy.PolicyError, SecretsKeyError) as exc:
        print(f"pericles worker: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    loop = _loop_thread()
    asyncio.run_coroutine_threadsafe(worker.open(), loop).result()
    app = make_app(settings.store)

    @app.task(bind=True, name=TASK, ignore_result=True, max_retries=None)  # type: ignore[untyped-decorator]
    def run_payload(task: Any, payload_id: str, sealed: str | None = None) -> None:
        try:
            asyncio.run_coroutine_threadsafe(worker.take(payload_id, sealed), loop).result()
        except (RedisError, OSError) as exc:
            # Redis unreachable before the claim: the message was taken (acks early), so
            # send it again. Harmless after a claim too: the claim lets only one start.
            log.warning("payload %s: cannot reach Redis (%s); queued again", payload_id, exc)
            raise task.retry(exc=exc, countdown=1) from exc

    from celery.signals import worker_ready

    @worker_ready.connect  # type: ignore[untyped-decorator]
    def _ready(**_: Any) -> None:
        log.info("pericles worker ready: %s, queues %s, %d slots", worker.id, queues, slots)

    celery_worker = app.Worker(
        pool_cls=WakingPool,
        concurrency=slots,
        queues=list(queues),
        hostname=f"pericles@{host}-{os.getpid()}",
        loglevel=settings.log_level.upper(),
        without_gossip=True,
        without_mingle=True,
        optimization="fair",
        quiet=True,
    )
    try:
        celery_worker.start()
    finally:
        asyncio.run_coroutine_threadsafe(worker.close(), loop).result()
        loop.call_soon_threadsafe(loop.stop)
    raise SystemExit(celery_worker.exitcode or 0)
