"""Change notification: who is woken by what (`pericles.changes`)."""

from __future__ import annotations

import asyncio

from pericles.changes import Changes


async def _woken(changes: Changes, wake: str) -> tuple[bool, bool]:
    """Whether a reader of every change and a reader of record changes were woken by `wake`
    (a method of `changes`, called for the key "p")."""
    every = asyncio.ensure_future(changes.wait("p", changes.version("p"), 0.5))
    record = asyncio.ensure_future(changes.wait_record("p", changes.record_version("p"), 0.5))
    await asyncio.sleep(0)  # both are waiting now
    assert changes.waiting("p") == 2
    if wake == "close":
        changes.close()
    else:
        getattr(changes, wake)("p")
    return await every, await record


def test_output_wakes_readers_of_every_change_only() -> None:
    # A payload's output moves what event streams read, never whether it has ended.
    assert asyncio.run(_woken(Changes(), "notify_output")) == (True, False)


def test_a_record_change_wakes_every_reader() -> None:
    assert asyncio.run(_woken(Changes(), "notify")) == (True, True)


def test_forget_and_close_wake_every_reader() -> None:
    assert asyncio.run(_woken(Changes(), "forget")) == (True, True)
    assert asyncio.run(_woken(Changes(), "close")) == (True, True)


def test_a_change_between_reading_and_waiting_is_not_missed() -> None:
    async def scenario() -> tuple[bool, bool]:
        changes = Changes()
        every, record = changes.version("p"), changes.record_version("p")
        changes.notify("p")  # after the reader noted the versions, before it waits
        # Both return at once, with no timeout to run out.
        return await changes.wait("p", every), await changes.wait_record("p", record)

    assert asyncio.run(scenario()) == (True, True)
