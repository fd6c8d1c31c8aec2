"""One attempt at a callback: POST the body, read at most 64 KiB of the answer, keep 1 KiB.

Redirects are not followed (a 3xx is an answer like any other), proxies from the
environment are not used (they would connect for us, past the address guard), and every
connection goes through `guard.GuardedBackend`.
"""

from __future__ import annotations

import dataclasses
import time

import httpx

from pericles.outbound.guard import AddressRefused, Allowed, guarded_transport

#: Bytes of an answer's body read at most; the rest is never read.
READ_LIMIT = 64 * 1024
#: Bytes of it kept, as text, in the delivery's attempt.
EXCERPT_LIMIT = 1024


@dataclasses.dataclass(frozen=True, slots=True)
class Answer:
    """What one attempt got: a status code and headers, or an error."""

    duration_seconds: float
    status_code: int | None = None
    retry_after: str | None = None
    excerpt: str | None = None
    error: str | None = None
    #: The address was refused by the guard, or the URL cannot be sent: final.
    refused: bool = False


class Sender:
    def __init__(self, allow: list[str], timeout: float, concurrency: int) -> None:
        self._client = httpx.AsyncClient(
            transport=guarded_transport(Allowed(allow), concurrency),
            timeout=timeout,
            follow_redirects=False,
            trust_env=False,
        )

    async def post(self, url: str, body: bytes, headers: dict[str, str]) -> Answer:
        started = time.monotonic()
        try:
            async with self._client.stream("POST", url, content=body, headers=headers) as answer:
                data = bytearray()
                async for chunk in answer.aiter_raw():
                    data += chunk
                    if len(data) >= READ_LIMIT:
                        break
                return Answer(
                    time.monotonic() - started,
                    answer.status_code,
                    answer.headers.get("retry-after"),
                    bytes(data[:EXCERPT_LIMIT]).decode("utf-8", "replace") or None,
                )
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            # A refused address or a URL that cannot be sent: trying again cannot help.
            refused = isinstance(exc, httpx.InvalidURL) or isinstance(
                exc.__cause__, AddressRefused | httpx.InvalidURL
            )
            reason = str(exc) or type(exc).__name__
            return Answer(time.monotonic() - started, error=reason, refused=refused)

    async def close(self) -> None:
        await self._client.aclose()
