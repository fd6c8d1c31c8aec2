"""The local runner: payloads run as children of this server."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import AsyncIterator, Mapping

from pericles import process
from pericles.errors import FieldError, ServiceUnavailable, StdinUnavailable
from pericles.model import STDIN_PIPE, PayloadSpec, Resolved
from pericles.runner.base import Event, Execution, Exited, Output, Runner, StartFailed

log = logging.getLogger("pericles.runner")


def _exited(result: process.Exit) -> Exited:
    usage = result.rusage
    if usage is None:
        return Exited(result.exit_code, result.signal)
    return Exited(
        result.exit_code,
        result.signal,
        cpu_user_seconds=usage.ru_utime,
        cpu_system_seconds=usage.ru_stime,
        max_rss_bytes=usage.ru_maxrss * 1024,  # Linux counts it in KiB
    )


class LocalExecution(Execution):
    def __init__(self, payload_id: str, child: process.Child) -> None:
        self._payload_id = payload_id
        self._queue: asyncio.Queue[Event] = asyncio.Queue()
        self._child = child
        self.pid: int | None = child.pid
        child.exited.add_done_callback(self._on_exited)

    def on_output(self, stream: str, data: bytes) -> None:
        self._queue.put_nowait(Output(stream, data))

    def _on_exited(self, future: asyncio.Future[process.Exit]) -> None:
        self._queue.put_nowait(_exited(future.result()))

    async def events(self) -> AsyncIterator[Event]:
        while True:
            event = await self._queue.get()
            yield event
            if isinstance(event, Exited):
                return

    async def terminate(self, grace: float) -> None:
        await self._child.terminate(grace)

    def send_signal(self, name: str) -> bool:
        return self._child.signal_group(signal.Signals[name])

    def write_stdin(self, data: bytes, close: bool = False) -> None:
        stdin = self._child.stdin
        if stdin is None or stdin.closed:
            raise StdinUnavailable(f"payload {self._payload_id} has no open stdin pipe")
        try:
            stdin.write(data)
        except process.StdinFull as exc:
            raise ServiceUnavailable(
                f"payload {self._payload_id} has too much stdin queued; retry later", 1
            ) from exc
        if close:
            stdin.close()


class LocalRunner(Runner):
    """Runs payloads here through `pericles.process`.

    `inherit_env` gives payloads this server's environment under their own `env`, instead of
    `PATH` alone; `max_stdin` bounds the stdin bytes queued per payload; `run_as` is the user
    and group payloads drop to.
    """

    def __init__(
        self,
        inherit_env: bool = False,
        max_stdin: int = 1024 * 1024,
        run_as: process.RunAs | None = None,
    ) -> None:
        base: dict[str, str] = {"PATH": process.DEFAULT_PATH}
        if inherit_env:
            # Never our own settings: PERICLES_TOKEN is a secret, the rest is not theirs.
            base.update((k, v) for k, v in os.environ.items() if not k.startswith("PERICLES_"))
        self._base_env: Mapping[str, str] = base
        self._max_stdin = max_stdin
        self._run_as = run_as
        self._digests = process.DigestCache()
        self._spawner = process.Spawner()

    async def open(self) -> None:
        process.become_subreaper()

    async def close(self) -> None:
        self._spawner.close()
        strays = process.kill_strays()
        if strays:
            log.warning("killed %d process(es) that escaped their payload's group", strays)

    def host_boot(self) -> str | None:
        return process.boot_id()

    def kill_leftovers(self, pid: int, started_after: float) -> int:
        return process.kill_group(pid, started_after)

    def check(self, spec: PayloadSpec) -> list[FieldError]:
        if spec.cwd is not None and (why := process.check_cwd(spec.cwd)) is not None:
            return [FieldError("cwd", why)]
        return []

    def _stdio(self, spec: PayloadSpec) -> process.Stdio:
        if spec.stdin is None:
            return process.Stdio(limit=self._max_stdin)
        if spec.stdin == STDIN_PIPE:
            return process.Stdio(pipe=True, limit=self._max_stdin)
        return process.Stdio(data=spec.stdin.encode(), limit=self._max_stdin)

    def _env(self, spec: PayloadSpec) -> Mapping[str, str]:
        if not spec.env and not spec.secret_env:
            return self._base_env
        secrets = {k: v.get_secret_value() for k, v in (spec.secret_env or {}).items()}
        # A fresh dict per payload: one payload's secrets never reach another's environment.
        return {**self._base_env, **(spec.env or {}), **secrets}

    async def identify(self, spec: PayloadSpec) -> Resolved:
        search_path = self._env(spec).get("PATH")
        try:
            return await process.identify(spec.cmd, search_path, spec.cwd, self._digests)
        except process.SpawnFailed as exc:
            raise StartFailed(exc.reason) from exc

    async def start(
        self, payload_id: str, spec: PayloadSpec, resolved: Resolved | None = None
    ) -> Execution:
        env = self._env(spec)
        execution: LocalExecution | None = None

        def sink(stream: str, data: bytes) -> None:
            assert execution is not None
            execution.on_output(stream, data)

        try:
            child = await self._spawner.spawn(
                spec.cmd,
                spec.params,
                env,
                sink,
                asyncio.get_running_loop(),
                stdio=self._stdio(spec),
                cwd=spec.cwd,
                limits=spec.limits.given() if spec.limits is not None else None,
                executable=resolved.exe if resolved is not None else None,
                run_as=self._run_as,
            )
        except process.SpawnFailed as exc:
            raise StartFailed(exc.reason) from exc
        execution = LocalExecution(payload_id, child)
        return execution
