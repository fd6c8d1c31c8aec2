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
from pericles.runner.base import (
    Event,
    Execution,
    Exited,
    Output,
    Runner,
    StartFailed,
    check_target,
)

log = logging.getLogger("pericles.runner")


def _exited(result: process.Exit) -> Exited:
    usage = result.rusage
    if usage is None:
        return Exited(result.exit_code, result.signal)
    counted = result.usage
    # The cgroup counts every process of the payload, waited for or not; rusage only those
    # the main process waited for. Peak memory comes from the cgroup when it has a memory
    # controller, else from the largest process the main one waited for.
    return Exited(
        result.exit_code,
        result.signal,
        cpu_user_seconds=counted.user_seconds if counted else usage.ru_utime,
        cpu_system_seconds=counted.system_seconds if counted else usage.ru_stime,
        max_rss_bytes=(counted.max_rss_bytes if counted and counted.max_rss_bytes else None)
        or usage.ru_maxrss * 1024,  # Linux counts it in KiB
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
    `PATH` alone; `payload_path` is the PATH they get (default `DEFAULT_PATH`);
    with `own_path_lookup` (under a command policy) a bare command is found on that PATH even
    when the payload sets its own, so what is judged never depends on the caller's PATH;
    `max_stdin` bounds the stdin bytes queued per payload; `run_as` is the user and group
    payloads drop to.
    """

    def __init__(
        self,
        inherit_env: bool = False,
        max_stdin: int = 1024 * 1024,
        run_as: process.RunAs | None = None,
        containment: str = "auto",
        payload_path: str | None = None,
        own_path_lookup: bool = False,
    ) -> None:
        base: dict[str, str] = {"PATH": process.DEFAULT_PATH}
        if inherit_env:
            # Never our own settings: PERICLES_TOKEN is a secret, the rest is not theirs.
            base.update((k, v) for k, v in os.environ.items() if not k.startswith("PERICLES_"))
        if payload_path is not None:
            base["PATH"] = payload_path
        self._own_path_lookup = own_path_lookup
        self._base_env: Mapping[str, str] = base
        self._max_stdin = max_stdin
        self._run_as = run_as
        self._digests = process.DigestCache()
        self._containment_mode = containment
        self._containment = process.Containment(None, "not opened yet")
        self._spawner = process.Spawner()

    async def open(self) -> None:
        """Become a subreaper and set up containment; raises `OSError` when
        `--containment cgroup` was asked and cgroups cannot be used."""
        process.become_subreaper()
        self._containment = process.Containment.create(self._containment_mode)
        log.info("containment: %s", self._containment.describe())

    async def close(self) -> None:
        # First: a start still under way ends before the cgroups are swept.
        self._spawner.close()
        self._containment.close()
        strays = process.kill_strays()
        if strays:
            log.warning("killed %d process(es) that escaped their payload's group", strays)

    def containment(self) -> str:
        return self._containment.kind

    def host_boot(self) -> str | None:
        return process.boot_id()

    def kill_leftovers(self, payload_id: str, pid: int | None, started_after: float) -> int:
        killed = self._containment.kill_leftovers(payload_id)
        if killed is not None:
            return killed
        return process.kill_group(pid, started_after) if pid is not None else 0

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

    def _search_path(self, spec: PayloadSpec) -> str | None:
        return (self._base_env if self._own_path_lookup else self._env(spec)).get("PATH")

    async def identify(self, spec: PayloadSpec) -> Resolved:
        search_path = self._search_path(spec)
        try:
            return await process.identify(spec.cmd, search_path, spec.cwd, self._digests)
        except process.SpawnFailed as exc:
            raise StartFailed(exc.reason) from exc
        except OSError as exc:  # whatever the OS refuses ends as a start error, never stuck
            raise StartFailed(exc.strerror or str(exc)) from exc

    async def start(
        self, payload_id: str, spec: PayloadSpec, resolved: Resolved | None = None
    ) -> Execution:
        """Start `spec`; with `resolved`, only if what opens now is what was judged.

        The executable and cwd are opened once more, checked against `resolved`
        (`check_target`), and the child starts from those open files: in the open
        directory (fchdir) and, when a rule pinned the digest, from the open file that was
        hashed.
        """
        env = self._env(spec)
        execution: LocalExecution | None = None

        def sink(stream: str, data: bytes) -> None:
            assert execution is not None
            execution.on_output(stream, data)

        try:
            target = await process.open_target(spec.cmd, env.get("PATH"), spec.cwd, self._digests)
        except process.SpawnFailed as exc:
            raise StartFailed(exc.reason) from exc
        except OSError as exc:
            raise StartFailed(exc.strerror or str(exc)) from exc
        submitted = False
        try:
            if resolved is not None:
                check_target(resolved, target.resolved)
            judged = resolved or target.resolved
            job = process.prepare(
                spec.cmd,
                spec.params,
                env,
                stdio=self._stdio(spec),
                cwd_fd=target.cwd_fd,
                limits=spec.limits.given() if spec.limits is not None else None,
                executable=target.exe_fd if judged.pinned else target.resolved.exe,
                # The judged file's own name: a caller's symlink spelling could make a
                # multi-call program act as another, or Python find a fake virtualenv.
                argv0=judged.exe if judged.judged else None,
                run_as=self._run_as,
                containment=self._containment,
                payload_id=payload_id,
            )
            # Off the loop: it serves requests and reaps while the child execs. The target's
            # files are closed once the spawner is done with them, cancelled or not.
            submitted = True
            started = await self._spawner.launch(job, release=target.close)
        except process.SpawnFailed as exc:
            raise StartFailed(exc.reason) from exc
        except OSError as exc:  # e.g. no descriptors left for its pipes (EMFILE)
            raise StartFailed(exc.strerror or str(exc)) from exc
        finally:
            if not submitted:
                target.close()
        child = process.watch(
            job, started, sink, asyncio.get_running_loop(), bool(spec.keep_descendants)
        )
        execution = LocalExecution(payload_id, child)
        return execution
