"""The door: where a POST waits while the queue is deep, so accepting never starves running.

Clients posting at full speed would otherwise take every turn of the event loop, and the
payloads already accepted would only crawl through their start and end (measured: 0.04
finished per 201 answered, see docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable

from pericles.errors import ServiceUnavailable

#: Payloads waiting beyond which a new one is held until one starts (`Door.enter`).
DOOR_DEPTH = 128
#: Seconds a held request waits for a payload to start before the door stops holding.
DOOR_WAIT = 1.0


class Door:
    """Admits requests to the pending queue at the pace payloads leave it.

    `has_slot`, `waiting` and `accepting` are the service's: a free running slot, how many
    payloads wait, and whether it still takes new ones.
    """

    def __init__(
        self,
        max_pending: int,
        has_slot: Callable[[], bool],
        waiting: Callable[[], int],
        accepting: Callable[[], bool],
    ) -> None:
        self._max_pending = max_pending
        self._has_slot = has_slot
        self._waiting = waiting
        self._accepting = accepting
        #: Requests held, first come first in.
        self._held: collections.deque[asyncio.Future[None]] = collections.deque()
        #: True once a held request waited DOOR_WAIT and none started: the running payloads
        #: are long, not lagging, so holding paces nothing. Closed again by the next start.
        self._stalled = False

    async def enter(self) -> None:
        """Return once the queue has room for one more; `ServiceUnavailable` when it has not.

        Beyond `--max-pending` waiting, refuse at once. Beyond `DOOR_DEPTH` waiting, hold the
        request until the runner takes one from the queue, for up to `DOOR_WAIT` seconds:
        the server then accepts payloads as fast as it starts them. When none starts in that
        time the slots are held by long payloads, not by a lagging start path: the queue is
        then a plain queue again (up to `--max-pending`) until the next start.
        """
        deadline: float | None = None
        while not self._has_slot():
            waiting = self._waiting()
            if waiting >= self._max_pending:
                raise ServiceUnavailable(
                    f"{waiting} payloads are waiting already (--max-pending)", retry_after=1
                )
            if waiting < DOOR_DEPTH or self._stalled:
                return
            loop = asyncio.get_running_loop()
            deadline = deadline or loop.time() + DOOR_WAIT
            turn: asyncio.Future[None] = loop.create_future()
            self._held.append(turn)
            try:
                async with asyncio.timeout_at(deadline):
                    await turn
            except TimeoutError:
                # Let every held request in now rather than each after its own wait.
                self._stalled = True
                self.open_all()
            finally:
                if not turn.done():
                    turn.cancel()
            if not self._accepting():
                raise ServiceUnavailable("the server is shutting down")

    def open(self) -> None:
        """One payload left the queue: let one held request in."""
        self._stalled = False
        while self._held:
            turn = self._held.popleft()
            if not turn.done():
                turn.set_result(None)
                return

    def open_all(self) -> None:
        """Let every held request go on (to be admitted, or refused when shutting down)."""
        for turn in self._held:
            if not turn.done():
                turn.set_result(None)
        self._held.clear()
