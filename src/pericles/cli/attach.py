"""Streaming a remote payload's output to this terminal, as if it ran here.

We follow the payload's SSE feed rather than two raw `/output?follow=true` streams: one
connection carries stdout and stderr in the order the server read them (two streams would
race each other, so a slow interleaving could come out reordered), ends with the terminal
record (so no second request for the exit code), and resumes by event id if it breaks. The
bytes are the same either way: both endpoints hand out text with invalid UTF-8 replaced,
and the SSE feed never splits a character across events.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, BinaryIO

from pericles.client import OutputChunk

if TYPE_CHECKING:
    from pericles.client import Client
from pericles.model import STREAMS, Payload, next_offset


class Attached:
    """Writes each chunk to our stdout or stderr at once, and notes dropped bytes."""

    def __init__(self, out: BinaryIO, err: BinaryIO) -> None:
        self._targets = {"stdout": out, "stderr": err}
        self._next = dict.fromkeys(STREAMS, 0)

    def write(self, chunk: OutputChunk) -> None:
        data = chunk.text.encode()
        gap = chunk.offset - self._next[chunk.stream]
        if gap > 0:
            note = f"\n[pericles: {gap} bytes of {chunk.stream} were not kept by the server]\n"
            sys.stderr.write(note)
            sys.stderr.flush()
        target = self._targets[chunk.stream]
        target.write(data)
        target.flush()
        self._next[chunk.stream] = next_offset(chunk.offset, len(data))


def attach(client: Client, payload_id: str) -> Payload:
    """Stream the payload's output to our stdout and stderr; its record once it has ended."""
    attached = Attached(sys.stdout.buffer, sys.stderr.buffer)
    record: Payload | None = None
    for item in client.follow(payload_id):
        if isinstance(item, OutputChunk):
            attached.write(item)
        else:
            record = item.record
    if record is None or not record.terminal:  # follow() only returns once it has ended
        record = client.wait(payload_id)
    return record
