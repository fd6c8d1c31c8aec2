"""The smallest FastAPI app: the baselines the Pericles routes are measured against.

- `GET /hello`: the read baseline for `GET /payloads/{id}`.
- `POST /true`: spawns `/bin/true` and answers once it has exited, with its exit code. The
  stand-in for adnanh/webhook (a Go server that runs one process per request and answers
  after it exits) when no Go toolchain is at hand: the same work on the same stack, with
  none of Pericles' records, queue, policy or events, for `POST /payloads?wait=`.
"""

from __future__ import annotations

import asyncio
import os

from fastapi import FastAPI

TRUE = "/bin/true"
SPAWN_ENV = {"PATH": "/usr/bin:/bin"}

app = FastAPI(title="hello")


@app.get("/hello")
async def hello() -> dict[str, str]:
    return {"hello": "world"}


@app.post("/true")
async def run_true() -> dict[str, int]:
    # As lean as a Python server can be: one posix_spawn, the exit seen through a pidfd on
    # the loop, one waitpid. No pipes, no records, no policy.
    loop = asyncio.get_running_loop()
    pid = os.posix_spawn(TRUE, [TRUE], SPAWN_ENV)  # noqa: ASYNC221 - returns once exec'd
    pidfd = os.pidfd_open(pid)
    exited: asyncio.Future[None] = loop.create_future()
    loop.add_reader(pidfd, exited.set_result, None)
    try:
        await exited
    finally:
        loop.remove_reader(pidfd)
        os.close(pidfd)
    _, status = os.waitpid(pid, 0)  # noqa: ASYNC222 - it has exited: no wait
    return {"exit_code": os.waitstatus_to_exitcode(status)}


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}
