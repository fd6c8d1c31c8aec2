"""`AsyncClient`: the same calls as `Client`, for asyncio code. The logic lives in `_core`."""

from __future__ import annotations

import builtins
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

import httpx

from pericles.client import _core, _tls
from pericles.client._core import Call, FollowItem, Order, Output, StreamName
from pericles.model import Payload

if TYPE_CHECKING:
    from pericles.model import PayloadSpec

T = TypeVar("T")


class AsyncClient:
    """A Pericles server over HTTP, for asyncio; see `pericles.client.Client` for the calls."""

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        *,
        timeout: httpx.Timeout = _core.DEFAULT_TIMEOUT,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self._owns_http = http is None
        if http is None:
            http = httpx.AsyncClient(
                base_url=_core.resolve_url(url), timeout=timeout, verify=_tls.tls_context()
            )
        elif url is not None:
            http.base_url = httpx.URL(_core.resolve_url(url))
        self._http = http
        self._headers = _core.request_headers(token)

    @property
    def url(self) -> str:
        return str(self._http.base_url).rstrip("/")

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    async def _send(self, call: Call[T]) -> T:
        try:
            response = await self._http.request(
                call.method,
                call.path,
                # An empty list would wipe the query of a Link URL: None keeps it.
                params=list(call.params) or None,
                json=call.json,
                headers={**self._headers, **call.headers},
                timeout=call.timeout or httpx.USE_CLIENT_DEFAULT,
            )
        except httpx.TransportError as exc:
            raise _core.unreachable(self._http.base_url, exc) from exc
        _core.check(response, call.payload_id)
        return call.read(response)

    async def create(
        self,
        spec: PayloadSpec | str,
        params: Sequence[str] = (),
        *,
        idempotency_key: str | None = None,
        **fields: Any,
    ) -> Payload:
        return await self._send(_core.create(_core.body_of(spec, params, fields), idempotency_key))

    async def get(self, payload_id: str) -> Payload:
        return await self._send(_core.get(payload_id))

    async def list(
        self,
        *,
        status: Iterable[str] = (),
        labels: Mapping[str, str] | None = None,
        order: Order = "asc",
        limit: int | None = None,
        page_size: int = 500,
    ) -> AsyncIterator[Payload]:
        pager = _core.Pager(status, labels or {}, order, limit, page_size)
        while (call := pager.call()) is not None:
            for record in pager.take(await self._send(call)):
                yield record

    async def resolve(self, id_or_prefix: str) -> str:
        if _core.is_full_id(id_or_prefix):
            return id_or_prefix
        return _core.pick(id_or_prefix, [r.id async for r in self.list(page_size=5000)])

    async def wait(self, payload_id: str, timeout: float | None = None) -> Payload:
        waiter = _core.Waiter(payload_id, timeout)
        while True:
            record = await self._send(waiter.call())
            if waiter.done(record):
                return record

    async def output(self, payload_id: str, stream: StreamName = "both", offset: int = 0) -> Output:
        return await self._send(_core.output(payload_id, stream, offset))

    async def follow(self, payload_id: str) -> AsyncIterator[FollowItem]:
        follower = _core.Follower(payload_id)
        while not follower.done:
            call = follower.call()
            headers = {**self._headers, **call.headers}
            try:
                async with self._http.stream(
                    "GET", call.path, headers=headers, timeout=call.timeout
                ) as r:
                    if not r.is_success:
                        await r.aread()
                        _core.check(r, payload_id)
                    async for line in r.aiter_lines():
                        for item in follower.feed(line):
                            yield item
            except httpx.TransportError as exc:
                follower.broken(self._http.base_url, exc)
            else:
                if not follower.done:
                    follower.broken(self._http.base_url, None)

    async def cancel(self, payload_id: str) -> Payload:
        return await self._send(_core.cancel(payload_id))

    async def signal(self, payload_id: str, name: str) -> Payload:
        return await self._send(_core.send_signal(payload_id, name))

    async def write_stdin(self, payload_id: str, data: str | bytes, close: bool = False) -> None:
        await self._send(_core.write_stdin(payload_id, data, close))

    async def actions(self) -> builtins.list[dict[str, Any]]:
        """The named actions this token may run, each with the JSON Schema of its args."""
        return await self._send(_core.actions())

    async def action(self, name: str) -> dict[str, Any]:
        return await self._send(_core.action(name))

    async def run_action(
        self,
        name: str,
        args: Mapping[str, Any] | None = None,
        *,
        idempotency_key: str | None = None,
    ) -> Payload:
        """Run a named action; its payload's pending record."""
        return await self._send(_core.run_action(name, args or {}, idempotency_key))

    async def delete(self, payload_id: str, force: bool = False) -> None:
        await self._send(_core.delete(payload_id, force))
