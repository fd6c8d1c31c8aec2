"""The Pericles client: `Client` (blocking) and `AsyncClient` (asyncio), on httpx.

    with Client() as pericles:              # PERICLES_URL, PERICLES_TOKEN
        record = pericles.create("/bin/echo", ["hello"])
        for item in pericles.follow(record.id):
            ...                             # OutputChunk(stream, text, offset) | StatusChange
        pericles.wait(record.id).exit_code

It speaks HTTP only: nothing here imports the server's service, store or runner.
"""

from pericles.client._core import FollowItem, Output, OutputChunk, StatusChange, StreamName
from pericles.client.asyncio import AsyncClient
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
from pericles.client.sync import Client

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
