"""A payload from leaving the queue until it ends: one `Run` owns all of it.

A run has one task (`drive`) that starts the process, records its output and its end; the
timers that may stop it (wall clock, idle); the stop asked for; and the output counts so far.
Requests reach it through its methods (`stop`, `signal`, `write_stdin`), never its fields.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from pericles.errors import StaleRecord, StdinUnavailable
from pericles.model import STDIN_PIPE, Payload, Resolved, Status, start_error, utcnow
from pericles.redact import Redactor
from pericles.runner import Execution, Exited, Output, Runner, StartFailed
from pericles.service.admission import Admitted
from pericles.service.records import Records

log = logging.getLogger("pericles.service")

#: Resolves an admitted spec's file just before it starts; `StartFailed` when it may not run.
Identify = Callable[[Admitted], Awaitable[Resolved]]


def _reason(exc: Exception) -> str:
    """The text for `error:start(...`: the OS's own words where there are some."""
    if isinstance(exc, StartFailed):
        return exc.reason
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


class Run:
    def __init__(
        self,
        record: Payload,
        admitted: Admitted,
        records: Records,
        runner: Runner,
        identify: Identify,
        kill_grace: float,
        accepting: Callable[[], bool],
    ) -> None:
        self.record = record
        self.admitted = admitted
        self.spec = spec = admitted.spec
        self._records = records
        self._runner = runner
        self._identify = identify
        self._kill_grace = kill_grace if spec.kill_grace is None else spec.kill_grace
        self._accepting = accepting
        # Serialises record writes for this payload between its drive task and the requests
        # (signal) that move it; it does not cover the process, which `process` guards itself.
        self._lock = asyncio.Lock()
        self.execution: Execution | None = None
        #: The terminal status asked for (cancelled or timeout) and the timeout's reason.
        self._stop: tuple[Status, str | None] | None = None
        #: Why the server ended it, for the record's `stop_reason`.
        self._stop_reason: str | None = None
        #: A client sent it a signal that may end it.
        self._signalled = False
        self._stopping: asyncio.Task[None] | None = None
        self._wall_timer: asyncio.TimerHandle | None = None
        self._idle_timer: asyncio.TimerHandle | None = None
        self._last_output = 0.0
        #: Masks the spec's secret_env values in its output; None when it has none.
        self._redactor = Redactor(spec.secret_values()) if spec.secret_env else None
        #: Per stream, (bytes written, bytes dropped) so far. They change with every read of
        #: the pipes, too often for a new record each time: readers see them laid over the
        #: record (`live`), and every transition stores them.
        self._counts: dict[str, tuple[int, int]] = {}
        self.task = asyncio.create_task(self._drive(), name=f"payload-{record.id}")

    @property
    def payload_id(self) -> str:
        return self.record.id

    @property
    def started(self) -> bool:
        """Its process runs (or ran) and it has not ended."""
        return self.execution is not None and not self.record.terminal

    def count_fields(self) -> dict[str, Any]:
        fields: dict[str, Any] = {}
        for stream, (total, dropped) in self._counts.items():
            fields[f"{stream}_bytes"] = total
            fields[f"{stream}_dropped"] = dropped
        return fields

    async def _move(self, wanted: Status, status: str | None = None, **changes: Any) -> None:
        self.record = await self._records.move(
            self.record, wanted, status, **{**self.count_fields(), **changes}
        )

    def closed(self) -> None:
        """Its task is over: drop its timers."""
        for timer in (self._wall_timer, self._idle_timer):
            if timer is not None:
                timer.cancel()

    # -- driving -------------------------------------------------------------------------

    async def _drive(self) -> None:
        payload_id = self.record.id
        if not self._accepting() or self._stop is not None:
            await self._move(Status.CANCELLED, finished_at=utcnow())
            return
        try:
            resolved = await self._identify(self.admitted)
            # Durable before the spawn: a server that dies from here on leaves a note, and the
            # next one records the payload lost instead of starting it again (at most once).
            await self._records.store.mark_starting(payload_id)
            execution = await self._runner.start(payload_id, self.spec, resolved)
        except Exception as exc:
            # Out of the queue and not running: any failure ends it, never leaves it pending.
            reason = _reason(exc)
            log.info("payload %s: could not start %r: %s", payload_id, self.spec.cmd, reason)
            await self._move(
                Status.ERROR,
                status=start_error(self.spec.cmd, reason),
                finished_at=utcnow(),
                stop_reason=self._stop_reason,
            )
            return
        self.execution = execution
        started = time.monotonic()
        async with self._lock:
            try:
                await self._move(
                    Status.WORKING,
                    pid=execution.pid,
                    started_at=utcnow(),
                    exe=resolved.exe,
                    exe_sha256=resolved.sha256,
                )
            except StaleRecord as exc:
                # Ended by another process while we spawned it (a reaper found our claim
                # expired): it must not run on unrecorded.
                log.warning("payload %s: killing what was just started: %s", payload_id, exc)
                await execution.terminate(0)
                async for _ in execution.events():
                    pass
                return
        self._arm_timers()
        self._stop_if_asked(execution)
        async for event in execution.events():
            if isinstance(event, Output):
                self._last_output = time.monotonic()
                await self._record_output(event)
            elif isinstance(event, Exited):
                await self._flush_output()
                try:
                    await self._end(event, time.monotonic() - started)
                except StaleRecord as exc:  # a reaper took it for lost: its end is not ours
                    log.warning("payload %s: ended, but %s", payload_id, exc)

    def _stop_if_asked(self, execution: Execution) -> None:
        """Stop it now if that was asked while it was starting."""
        if self._stop is not None:  # cancelled while it was starting
            self._begin_stop()
        elif not self._accepting() and self._stopping is None:
            # The server began shutting down while the spawner started it: shutdown did not
            # see it running, so it stops itself, as shutdown would have stopped it.
            self._stop_reason = self._stop_reason or "shutdown"
            self._stopping = asyncio.create_task(execution.terminate(self._kill_grace))

    async def _record_output(self, event: Output) -> None:
        # Secrets are masked here, before the store: offsets and counts are of masked output.
        redactor = self._redactor
        data = event.data if redactor is None else redactor.feed(event.stream, event.data)
        if data:
            await self._store_output(event.stream, data)

    async def _flush_output(self) -> None:
        if self._redactor is not None:
            for stream in ("stdout", "stderr"):
                if data := self._redactor.flush(stream):
                    await self._store_output(stream, data)

    async def _store_output(self, stream: str, data: bytes) -> None:
        self._counts[stream] = await self._records.append_output(self.record.id, stream, data)

    async def _end(self, event: Exited, duration: float) -> None:
        wanted, reason = self._stop or (Status.FINISHED, None)
        why = self._stop_reason
        if why is None and event.signal is not None and self._signalled:
            why = "signal"
        async with self._lock:
            await self._move(
                wanted,
                stop_reason=why,
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

    def _arm_timers(self) -> None:
        loop = asyncio.get_running_loop()
        if self.spec.timeout is not None:
            self._wall_timer = loop.call_later(self.spec.timeout, self.stop, Status.TIMEOUT, "wall")
        if self.spec.idle_timeout is not None:
            self._last_output = time.monotonic()
            self._idle_timer = loop.call_later(self.spec.idle_timeout, self._check_idle)

    def _check_idle(self) -> None:
        idle = self.spec.idle_timeout
        if idle is None or self._stop is not None:
            return
        now = time.monotonic()
        if self.record.state is Status.PAUSED:  # a stopped process cannot write: not idle
            self._last_output = now
        remaining = self._last_output + idle - now
        if remaining <= 0:
            self.stop(Status.TIMEOUT, "idle")
        else:
            self._idle_timer = asyncio.get_running_loop().call_later(remaining, self._check_idle)

    def stop(self, status: Status, reason: str | None, why: str | None = None) -> None:
        """Ask it to end as `status`: never started if not yet, else TERM, its grace, KILL.

        `why` is the record's `stop_reason` (cancel, timeout, delete, shutdown); by default
        "timeout" for a timeout and "cancel" otherwise.
        """
        if self._stop is not None:
            return
        log.info("payload %s: stopping it as %s %s", self.record.id, status.value, reason or "")
        self._stop = (status, reason)
        self._stop_reason = why or ("timeout" if status is Status.TIMEOUT else "cancel")
        if self.execution is not None:
            self._begin_stop()

    def _begin_stop(self) -> None:
        if self.execution is None or self._stopping is not None:
            return
        self._stopping = asyncio.create_task(self.execution.terminate(self._kill_grace))

    async def ended(self) -> Payload:
        """Its terminal record, once its task is over."""
        # Not shielded by the caller: wait() never cancels the task it watches.
        await asyncio.wait({self.task})
        return self.record

    # -- signals and stdin ---------------------------------------------------------------

    def shut_down(self, grace: float) -> Awaitable[None]:
        """Stop it for a server shutdown: it ends as its process does, `stop_reason` shutdown."""
        if self._stop_reason is None:
            self._stop_reason = "shutdown"
        assert self.execution is not None
        return self.execution.terminate(grace)

    async def signal(self, name: str) -> Payload:
        """Send `name` to its process group; SIGSTOP pauses a working one, SIGCONT resumes."""
        execution = self.execution
        assert execution is not None
        if name not in ("SIGSTOP", "SIGCONT"):
            self._signalled = True
        async with self._lock:
            state = self.record.state
            if not execution.send_signal(name) or self.record.terminal:
                return self.record
            if name == "SIGSTOP" and state is Status.WORKING:
                await self._move(Status.PAUSED)
            elif name == "SIGCONT" and state is Status.PAUSED:
                self._last_output = time.monotonic()
                await self._move(Status.WORKING)
            return self.record

    def write_stdin(self, data: bytes, close: bool) -> None:
        execution = self.execution
        assert execution is not None
        if self.spec.stdin != STDIN_PIPE:
            raise StdinUnavailable(f'payload {self.record.id} was not created with "stdin": "pipe"')
        execution.write_stdin(data, close)
