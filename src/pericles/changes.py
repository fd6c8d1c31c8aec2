"""Change notification: readers wait for "something changed" instead of polling.

Each key (a payload id, or a feed name) has a version that grows with every change. A reader
notes the version, reads what it needs, and waits only if the version is still the one it
noted, so no change can slip between its read and its wait.
"""

from __future__ import annotations

import asyncio
import contextlib


class Changes:
    def __init__(self) -> None:
        self._versions: dict[str, int] = {}
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}
        #: Set at shutdown: readers end instead of waiting (see `close`).
        self.closed = False

    def version(self, key: str) -> int:
        return self._versions.get(key, 0)

    def waiting(self, key: str) -> int:
        """How many readers wait on `key` now."""
        return len(self._waiters.get(key, ()))

    def notify(self, key: str) -> None:
        self._versions[key] = self._versions.get(key, 0) + 1
        for waiter in self._waiters.pop(key, ()):
            if not waiter.done():
                waiter.set_result(None)

    def notify_all(self) -> None:
        """Wake every waiter: what they wait on may have changed unseen."""
        for key in list(self._waiters):
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

    async def wait(self, key: str, seen: int, timeout: float | None = None) -> bool:
        """Wait until `key` moves past version `seen`; False when `timeout` ran out first."""
        if self.version(key) != seen:
            return True
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(key, []).append(waiter)
        try:
            await asyncio.wait_for(waiter, timeout)
        except TimeoutError:
            return False
        finally:
            if not waiter.done():
                waiter.cancel()
            waiters = self._waiters.get(key)
            if waiters is not None:
                with contextlib.suppress(ValueError):
                    waiters.remove(waiter)
                if not waiters:
                    del self._waiters[key]
        return True
