"""Starting children on a thread of their own, so the event loop never waits while one execs.

`os.posix_spawn` blocks its caller until the child has exec'd (0.3 ms or more each), and
joining the child's cgroup right after costs about as much again; both release the GIL. On
the loop's thread that time is lost to every request and every exit; on the spawner's thread
the loop serves and reaps meanwhile, and the two cores both work.

Two threads, so that two children exec at once on two cores. `PayloadCgroup.join` takes
for the child whatever else it finds where the child was born (what it forked before it
was moved), which is only right while no other start is under way *there*: so each thread
first moves itself into a threaded cgroup of its own (`Cgroups.stage`), where its children
are born. A thread that cannot (no threaded cgroups) starts in the leaf, taking turns with
any other such thread. `fork_exec` payloads (cwd, limits, run_as) start on these threads
too: a forked child sits where it was born until it moves itself. Forking from a thread is
safe here: the child runs only `forkexec._child` before `execve`.

Guarantees kept: a start asked for runs at most once; a start cancelled before the thread
takes it never runs (`SpawnFailed(ECANCELED)`); one cancelled, or finished after `close`,
is killed and reaped with its cgroup, never left running unwatched.
"""

from __future__ import annotations

import asyncio
import collections
import errno
import logging
import os
import sys
import threading
from collections.abc import Callable

from pericles.process.cgroup import Stage
from pericles.process.spawn import (
    Launch,
    Launched,
    Opened,
    SpawnFailed,
    execute,
    finish,
    open_for,
)

log = logging.getLogger("pericles.process")

#: Seconds a thread waiting for the GIL lets the holder run before asking for it.
_SWITCH_INTERVAL = 0.0002


class _Job:
    """One start: prepared on the loop, executed on the thread, its end handled on the loop."""

    __slots__ = ("future", "launch", "loop", "opened", "release", "taken", "unwanted")

    def __init__(
        self,
        job: Launch,
        opened: Opened,
        loop: asyncio.AbstractEventLoop,
        release: Callable[[], None] | None,
    ) -> None:
        self.launch = job
        self.opened = opened
        self.loop = loop
        self.release = release
        #: The pid once the thread has started it; set on the loop, never cancelled once taken.
        self.future: asyncio.Future[int] = loop.create_future()
        self.future.add_done_callback(self._done)
        #: The thread has begun it: from here it can only be killed once started.
        self.taken = False
        #: Its waiter was cancelled after the thread took it.
        self.unwanted = False

    def _done(self, future: asyncio.Future[int]) -> None:
        if future.cancelled() or future.exception() is not None:
            self.opened.discard()
        elif self.unwanted:
            self.opened.abort(future.result())
        if self.release is not None:
            self.release()


class Spawner:
    """Runs `spawn.execute` on `threads` threads of its own, started on first use; `close()`
    when done."""

    def __init__(self, threads: int = 2) -> None:
        self._jobs: collections.deque[_Job] = collections.deque()
        self._ready = threading.Condition(threading.Lock())
        self._count = threads
        self._threads: list[threading.Thread] = []
        self._closed = False
        #: Held by a thread without a stage while it starts a child in the leaf.
        self._leaf_turn = threading.Lock()

    @property
    def queued(self) -> int:
        """Starts waiting for a thread."""
        with self._ready:
            return len(self._jobs)

    @property
    def closed(self) -> bool:
        """True once `close()` began: no start is taken any more."""
        return self._closed

    async def launch(self, job: Launch, release: Callable[[], None] | None = None) -> Launched:
        """Start `job`, the exec on the spawner thread; raises `SpawnFailed`.

        `release` is called on the loop once the thread is done with the job, whatever the
        outcome: the descriptors `job` names stay open until then, even when the wait is
        cancelled (a closed, reused number would exec another file). Cancelled while waiting:
        the child never starts, or is killed and reaped if it already had.
        """
        loop = asyncio.get_running_loop()
        try:
            opened = open_for(job)
        except SpawnFailed:
            if release is not None:
                release()
            raise
        item = _Job(job, opened, loop, release)
        self._submit(item)
        try:
            # Shielded: a cancel must not drop a child the thread may be starting right now.
            pid = await asyncio.shield(item.future)
        except asyncio.CancelledError:
            self._cancelled(item)
            raise
        return finish(opened, pid)

    def _submit(self, item: _Job) -> None:
        with self._ready:
            if self._closed:
                item.future.set_exception(SpawnFailed(errno.ECANCELED))
                return
            if not self._threads:
                for index in range(self._count):
                    thread = threading.Thread(
                        target=self._serve, args=(index,), name=f"pericles-spawner-{index}"
                    )
                    thread.daemon = True
                    thread.start()
                    self._threads.append(thread)
                # A thread wants the GIL back after each of its syscalls, and the loop may
                # run Python for a long stretch (all its ready callbacks): hand the GIL over
                # sooner than the default 5 ms (one A/B run of bench/throughput.py: ratio
                # 0.50 against 0.43; the machine is noisy).
                sys.setswitchinterval(_SWITCH_INTERVAL)
            self._jobs.append(item)
            self._ready.notify()

    def _cancelled(self, item: _Job) -> None:
        """Its waiter was cancelled: it never starts, or what it started is killed."""
        with self._ready:
            taken = item.taken
            if not taken:
                self._jobs.remove(item)
        future = item.future
        if not taken:
            future.cancel()
        elif not future.done():
            item.unwanted = True  # killed once started: see `_Job._done`
        elif not future.cancelled() and future.exception() is None:
            # Started, but the cancel came before the wait woke up: nobody will watch it.
            item.opened.abort(future.result())

    def close(self) -> None:
        """Refuse new starts, end the ones still queued, and wait for the thread to stop."""
        with self._ready:
            self._closed = True
            queued = list(self._jobs)
            self._jobs.clear()
            self._ready.notify_all()
            threads = list(self._threads)
        for item in queued:
            if not item.future.done():
                item.future.set_exception(SpawnFailed(errno.ECANCELED))
        for thread in threads:
            thread.join()

    def _serve(self, index: int) -> None:
        stage: Stage | None = None
        tried = False
        try:
            while True:
                with self._ready:
                    while not self._jobs and not self._closed:
                        self._ready.wait()
                    if not self._jobs:
                        return
                    item = self._jobs.popleft()
                    item.taken = True
                cgroups = item.launch.containment.cgroups
                if cgroups is not None and not tried:
                    tried = True
                    try:
                        stage = cgroups.stage(f"spawn{index}")
                    except Exception:  # never a thread gone with starts left waiting
                        log.exception("spawner: no cgroup of its own; starts take turns")
                self._run(item, stage, in_leaf=cgroups is not None and stage is None)
        finally:
            if stage is not None:
                os.close(stage.threads_fd)

    def _run(self, item: _Job, stage: Stage | None, in_leaf: bool) -> None:
        exc: BaseException | None = None
        try:
            if in_leaf:
                with self._leaf_turn:
                    pid = execute(item.launch, item.opened)
            else:
                pid = execute(item.launch, item.opened, stage)
        except SpawnFailed as failed:
            pid, exc = 0, failed
        except BaseException as bug:  # the waiter must hear of it, never hang
            log.exception("spawner: starting a child failed")
            pid, exc = 0, bug
        try:
            item.loop.call_soon_threadsafe(self._deliver, item, pid, exc)
        except RuntimeError:  # the loop is closed: nobody is left to watch it
            if pid:
                item.opened.abort(pid)

    def _deliver(self, item: _Job, pid: int, exc: BaseException | None) -> None:
        if pid and self._closed:
            # The runner is closing: nothing may run that nobody will watch.
            item.opened.abort(pid)
            pid, exc = 0, SpawnFailed(errno.ECANCELED)
        if exc is not None:
            item.future.set_exception(exc)
        else:
            item.future.set_result(pid)
