"""Change notification: who is woken by what (`pericles.changes`)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from pericles.changes import Changes

#: Seconds a woken reader has to return: a deadline for a failing test, never waited out.
DEADLINE = 10


async def _first_steps_taken() -> None:
    """Return once every task scheduled before this call has run up to its first await:
    the loop runs callbacks in the order they were scheduled, and this one comes last."""
    turn = asyncio.Event()
    asyncio.get_running_loop().call_soon(turn.set)
    await turn.wait()


async def _still_waiting_after(wake: Callable[[Changes], None]) -> tuple[int, Changes]:
    """A reader of every change and a reader of record changes wait on "p"; `wake` is
    done; how many of the two still wait. Both are then woken and must return True."""
    changes = Changes()
    every = asyncio.ensure_future(changes.wait("p", changes.version("p")))
    record = asyncio.ensure_future(changes.wait_record("p", changes.record_version("p")))
    await _first_steps_taken()
    assert changes.waiting("p") == 2
    wake(changes)
    left = changes.waiting("p")
    changes.notify("p")
    assert list(await asyncio.wait_for(asyncio.gather(every, record), DEADLINE)) == [True, True]
    return left, changes


def test_output_wakes_readers_of_every_change_only() -> None:
    # A payload's output moves what event streams read, never whether it has ended: the
    # reader of record changes is the one left waiting.
    async def scenario() -> tuple[int, int, int]:
        left, changes = await _still_waiting_after(lambda c: c.notify_output("p"))
        return left, changes.version("p"), changes.record_version("p")

    # Two changes seen by the first reader (the output, then the record), one by the other.
    assert asyncio.run(scenario()) == (1, 2, 1)


def test_a_record_change_forget_and_close_wake_every_reader() -> None:
    wakes: list[Callable[[Changes], None]] = [
        lambda c: c.notify("p"),
        lambda c: c.forget("p"),
        lambda c: c.close(),
    ]
    for wake in wakes:
        left, _ = asyncio.run(_still_waiting_after(wake))
        assert left == 0


def test_a_change_between_reading_and_waiting_is_not_missed() -> None:
    async def scenario() -> tuple[bool, bool]:
        changes = Changes()
        every, record = changes.version("p"), changes.record_version("p")
        changes.notify("p")  # after the reader noted the versions, before it waits
        # Both return at once: there is nothing to wait for.
        return await changes.wait("p", every), await changes.wait_record("p", record)

    assert asyncio.run(scenario()) == (True, True)
