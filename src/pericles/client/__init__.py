"""The Pericles client: `Client` (blocking) and `AsyncClient` (asyncio), on httpx.

    with Client() as pericles:              # PERICLES_URL, PERICLES_TOKEN
        record = pericles.create("/bin/echo", ["hello"])
        for item in pericles.follow(record.id):
            ...                             # OutputChunk(stream, text, offset) | StatusChange
        pericles.wait(record.id).exit_code

It speaks HTTP only: nothing here imports the server's service, store or runner.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from pericles.client.errors import (
    AlreadyTerminal,
    AmbiguousId,
    ClientError,
    Conflict,
    InvalidRequest,
    InvalidTransition,
    NotFound,
    NotRunning,
    ProblemError,
    ServerUnreachable,
    SpecNotValid,
    StdinUnavailable,
    StillActive,
    Unauthorized,
    Unavailable,
)

if TYPE_CHECKING:
    from pericles.client._core import FollowItem, Output, OutputChunk, StatusChange, StreamName
    from pericles.client.asyncio import AsyncClient
    from pericles.client.sync import Client

# The clients and their data types come with httpx and the payload model (about 0.1 s to
# import): loaded on first use, so `pericles --help` and the errors cost none of it.
_LAZY = {
    "AsyncClient": "pericles.client.asyncio",
    "Client": "pericles.client.sync",
    "FollowItem": "pericles.client._core",
    "Output": "pericles.client._core",
    "OutputChunk": "pericles.client._core",
    "StatusChange": "pericles.client._core",
    "StreamName": "pericles.client._core",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = [
    "AlreadyTerminal",
    "AmbiguousId",
    "AsyncClient",
    "Client",
    "ClientError",
    "Conflict",
    "FollowItem",
    "InvalidRequest",
    "InvalidTransition",
    "NotFound",
    "NotRunning",
    "Output",
    "OutputChunk",
    "ProblemError",
    "ServerUnreachable",
    "SpecNotValid",
    "StatusChange",
    "StdinUnavailable",
    "StillActive",
    "StreamName",
    "Unauthorized",
    "Unavailable",
]
