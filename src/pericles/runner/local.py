"""The local runner: payloads run as children of this server."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from pericles import process
from pericles.model import PayloadSpec
from pericles.runner.base import Event, Execution, Exited, Output, Runner, StartFailed

log = logging.getLogger("pericles.runner")


class LocalExecution(Execution):
    def __init__(self, payload_id: str, cmd: str, params: list[str]) -> None:
        self._payload_id = payload_id
        self._queue: asyncio.Queue[Event] = asyncio.Queue()
        loop = asyncio.get_running_loop()
        env = {"PATH": process.DEFAULT_PATH}
        try:
            self._child = process.spawn(cmd, params, env, self._on_output, loop)
        except process.SpawnFailed as exc:
            raise StartFailed(exc.reason) from exc
        self.pid: int | None = self._child.pid
        self._child.exited.add_done_callback(self._on_exited)

    def _on_output(self, stream: str, data: bytes) -> None:
        self._queue.put_nowait(Output(stream, data))

    def _on_exited(self, future: asyncio.Future[process.Exit]) -> None:
        result = future.result()
        self._queue.put_nowait(Exited(result.exit_code, result.signal))

    async def events(self) -> AsyncIterator[Event]:
        while True:
            event = await self._queue.get()
            yield event
            if isinstance(event, Exited):
                return

    async def terminate(self, grace: float) -> None:
        await self._child.terminate(grace)


class LocalRunner(Runner):
    async def open(self) -> None:
        process.become_subreaper()

    async def close(self) -> None:
        strays = process.kill_strays()
        if strays:
            log.warning("killed %d process(es) that escaped their payload's group", strays)

    async def start(self, payload_id: str, spec: PayloadSpec) -> Execution:
        return LocalExecution(payload_id, spec.cmd, list(spec.params))
