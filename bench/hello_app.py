"""The smallest FastAPI app: the baselines the Pericles routes are measured against.

- `GET /hello`: the read baseline for `GET /payloads/{id}`.
- `POST /true`: spawns `/bin/true` and answers once it has exited, with its exit code. The
  stand-in for adnanh/webhook (a Go server that runs one process per request and answers
  after it exits) when no Go toolchain is at hand: the same work on the same stack, with
  none of Pericles' records, queue, policy or events, for `POST /payloads?wait=`.
"""

from __future__ import annotations

import asyncio

from fastapi import FastAPI

app = FastAPI(title="hello")


@app.get("/hello")
async def hello() -> dict[str, str]:
    return {"hello": "world"}


@app.post("/true")
async def run_true() -> dict[str, int | None]:
    process = await asyncio.create_subprocess_exec(
        "/bin/true",
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
        env={"PATH": "/usr/bin:/bin"},
    )
    return {"exit_code": await process.wait()}


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}
