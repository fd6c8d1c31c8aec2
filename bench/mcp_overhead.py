"""What the MCP endpoint costs over the REST API for the same work.

One `handler-serve --mcp`; the same short command (`/bin/true`) run N times one after the
other, alternately as an agent does it (the SDK's client: one `run` tool call, which waits
for the end and answers exit status and output) and as a REST client does it (POST
/payloads, then GET /payloads/{id}?wait=). Each way keeps one connection alive. Reports the median
and p90 round trip of each and their ratio: a same-run baseline, not a wall-clock target.

    .venv/bin/python bench/mcp_overhead.py          # --runs 200
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable

import httpx
from mcp import Client

from serverproc import ServerProcess, handler_serve_argv


async def compare(url: str, runs: int) -> tuple[list[float], list[float]]:
    """Round trips of each way, alternated so that both see the same load on the machine."""
    async with (
        Client(f"{url}/mcp") as client,
        httpx.AsyncClient(base_url=url, timeout=30) as http,
    ):

        async def through_mcp() -> None:
            result = await client.call_tool("run", {"cmd": "/bin/true"})
            assert not result.is_error
            assert result.structured_content is not None
            assert result.structured_content["exit_code"] == 0

        async def through_rest() -> None:
            created = await http.post("/payloads", json={"cmd": "/bin/true"})
            record = await http.get(f"/payloads/{created.json()['id']}", params={"wait": 30})
            assert record.json()["exit_code"] == 0

        ways: list[Callable[[], Awaitable[None]]] = [through_rest, through_mcp]
        seconds: list[list[float]] = [[], []]
        for way in ways:  # warm up: imports, the first connection, the first spawn
            await way()
        for _ in range(runs):
            for way, taken in zip(ways, seconds, strict=True):
                started = time.perf_counter()
                await way()
                taken.append(time.perf_counter() - started)
        return seconds[0], seconds[1]


def summary(name: str, seconds: list[float]) -> float:
    median = statistics.median(seconds)
    p90 = statistics.quantiles(seconds, n=10)[-1]
    print(f"{name:>5}: median {median * 1000:.2f} ms, p90 {p90 * 1000:.2f} ms")
    return median


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()
    server = ServerProcess("pericles", [*handler_serve_argv(), "--mcp", "--log-level", "warning"])
    with server.start():
        url = f"http://127.0.0.1:{server.port}"
        rest_seconds, mcp_seconds = asyncio.run(compare(url, args.runs))
        rest = summary("REST", rest_seconds)
        mcp = summary("MCP", mcp_seconds)
    print(f"MCP / REST median round trip: {mcp / rest:.2f}")


if __name__ == "__main__":
    main()
