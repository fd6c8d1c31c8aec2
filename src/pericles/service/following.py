"""Reading a payload as it changes: wait for its end, or follow its output and status.

Readers note a version of the payload's changes, read, and wait only if nothing changed
since (`pericles.changes`), so no change slips between a read and a wait.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

from pericles.changes import Changes
from pericles.model import Payload, Piece, Status
from pericles.store import Store

#: The record as the service shows it (queue place, live output counts).
GetRecord = Callable[[str], Awaitable[Payload]]


async def wait_for_end(
    get: GetRecord,
    changes: Changes,
    payload_id: str,
    timeout: float,
    stopping: Callable[[], bool] = lambda: False,
) -> Payload:
    """The record once terminal, or as it is after `timeout` seconds or once `stopping()`.

    Woken by changes of the record only: more output never ends a payload."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        version = changes.record_version(payload_id)
        record = await get(payload_id)
        remaining = deadline - asyncio.get_running_loop().time()
        if record.terminal or remaining <= 0 or stopping():
            return record
        await changes.wait_record(payload_id, version, remaining)


async def follow(
    get: GetRecord,
    store: Store,
    changes: Changes,
    payload_id: str,
    positions: dict[str, int],
    seen: Status | None,
    heartbeat: float,
) -> AsyncIterator[Payload | Piece | None]:
    """See `Service.follow`."""
    while True:
        version = changes.version(payload_id)
        # Read the record before the output: once it is terminal, all output is stored.
        record = await get(payload_id)
        if record.state != seen and not record.terminal:
            seen = record.state
            yield record
        pieces = await store.output_pieces(payload_id, positions)
        for piece in pieces:
            positions[piece.stream] = piece.end
            yield piece
        if record.terminal:
            if record.state != seen:
                yield record
            return
        if changes.closed:
            return  # shutting down: the client resumes elsewhere with its last event id
        if not pieces and not await changes.wait(payload_id, version, heartbeat):
            yield None
