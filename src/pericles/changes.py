"""Change notification: readers wait for "something changed" instead of polling.

Each key (a payload id, or a feed name) has a version that grows with every change. A reader
notes the version, reads what it needs, and waits only if the version is still the one it
noted, so no change can slip between its read and its wait.

A key has two versions: one that every change moves, and one that only changes of the record
itself move (`notify`, not `notify_output`). A reader of the output (an event stream) waits
on the first; a reader waiting for the payload to end waits on the second, so a payload that
writes a gigabyte of output does not wake it, and make it read the record again, at every
read of its pipe.
"""

from __future__ import annotations

import asyncio
import contextlib

#: A waiter list per key: woken by every change, or by record changes only.
_Waiters = dict[str, list[asyncio.Future[None]]]


class Changes:
    def __init__(self) -> None:
        self._versions: dict[str, int] = {}
        self._record_versions: dict[str, int] = {}
        self._waiters: _Waiters = {}
        self._record_waiters: _Waiters = {}
        #: Set at shutdown: readers end instead of waiting (see `close`).
        self.closed = False

    def version(self, key: str) -> int:
        """Moved by every change of `key`."""
        return self._versions.get(key, 0)

    def record_version(self, key: str) -> int:
        """Moved by the changes of `key`'s record only (`notify`)."""
        return self._record_versions.get(key, 0)

    def waiting(self, key: str) -> int:
        """How many readers wait on `key` now."""
        return len(self._waiters.get(key, ())) + len(self._record_waiters.get(key, ()))

    def notify(self, key: str) -> None:
        """`key`'s record changed: wake every reader of it."""
        self._record_versions[key] = self._record_versions.get(key, 0) + 1
        _wake(self._record_waiters, key)
        self.notify_output(key)

    def notify_output(self, key: str) -> None:
        """`key` has more output: wake the readers of every change."""
        self._versions[key] = self._versions.get(key, 0) + 1
        _wake(self._waiters, key)

    def notify_all(self) -> None:
        """Wake every waiter: what they wait on may have changed unseen."""
        for key in {*self._waiters, *self._record_waiters}:
            self.notify(key)

    def close(self) -> None:
        """Wake every waiter; readers that would wait forever (event streams) see `closed` and
        end: the server is shutting down, and an open stream would hold its connection, and so
        the server's exit, until the shutdown grace runs out. A stream checks `closed` and
        waits with no await between, so none can miss this."""
        self.closed = True
        self.notify_all()

    def forget(self, key: str) -> None:
        """Drop a key whose changes are over; its waiters are woken to see that."""
        self.notify(key)
        self._versions.pop(key, None)
        self._record_versions.pop(key, None)

    async def wait(self, key: str, seen: int, timeout: float | None = None) -> bool:
        """Wait until `key` moves past `version` `seen`; False when `timeout` ran out first."""
        if self.version(key) != seen:
            return True
        return await _wait(self._waiters, key, timeout)

    async def wait_record(self, key: str, seen: int, timeout: float | None = None) -> bool:
        """Wait until `key` moves past `record_version` `seen`; False when `timeout` ran out
        first."""
        if self.record_version(key) != seen:
            return True
        return await _wait(self._record_waiters, key, timeout)


def _wake(waiters: _Waiters, key: str) -> None:
    for waiter in waiters.pop(key, ()):
        if not waiter.done():
            waiter.set_result(None)


async def _wait(waiters: _Waiters, key: str, timeout: float | None) -> bool:
    waiter = asyncio.get_running_loop().create_future()
    waiters.setdefault(key, []).append(waiter)
    try:
        await asyncio.wait_for(waiter, timeout)
    except TimeoutError:
        return False
    finally:
        if not waiter.done():
            waiter.cancel()
        listed = waiters.get(key)
        if listed is not None:
            with contextlib.suppress(ValueError):
                listed.remove(waiter)
            if not listed:
                del waiters[key]
    return True
