"""`Client`: the blocking client, for scripts and the `pericles` command."""

from __future__ import annotations

import builtins
from collections.abc import Iterable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

import httpx

from pericles.client import _core, _tls
from pericles.client._core import Call, FollowItem, Order, Output, StreamName
from pericles.model import Payload

if TYPE_CHECKING:
    from pericles.model import PayloadSpec

T = TypeVar("T")


class Client:
    """A Pericles server over HTTP.

    `url` and `token` default to `PERICLES_URL` and `PERICLES_TOKEN`. Give `http` to use an
    `httpx.Client` of your own (its base URL is used when `url` is not given); the client then
    leaves closing it to you. Use it as a context manager, or call `close()`.
    Errors are `pericles.client.ClientError`s: `ServerUnreachable`, or a `ProblemError`
    carrying the server's problem JSON.
    """

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        *,
        timeout: httpx.Timeout = _core.DEFAULT_TIMEOUT,
        http: httpx.Client | None = None,
    ) -> None:
        self._owns_http = http is None
        if http is None:
            http = httpx.Client(
                base_url=_core.resolve_url(url), timeout=timeout, verify=_tls.tls_context()
            )
        elif url is not None:
            http.base_url = httpx.URL(_core.resolve_url(url))
        self._http = http
        self._headers = _core.request_headers(token)

    @property
    def url(self) -> str:
        return str(self._http.base_url).rstrip("/")

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._owns_http:
            self._http.close()

    def _send(self, call: Call[T]) -> T:
        try:
            response = self._http.request(
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

    def create(
        self,
        spec: PayloadSpec | str,
        params: Sequence[str] = (),
        *,
        idempotency_key: str | None = None,
        **fields: Any,
    ) -> Payload:
        """Start a payload: `create(PayloadSpec(...))` or `create("/bin/echo", ["hi"], env=...)`."""
        return self._send(_core.create(_core.body_of(spec, params, fields), idempotency_key))

    def get(self, payload_id: str) -> Payload:
        return self._send(_core.get(payload_id))

    def list(
        self,
        *,
        status: Iterable[str] = (),
        labels: Mapping[str, str] | None = None,
        order: Order = "asc",
        limit: int | None = None,
        page_size: int = 500,
    ) -> Iterator[Payload]:
        """Every payload (or the first `limit`), page after page, oldest first unless `desc`."""
        pager = _core.Pager(status, labels or {}, order, limit, page_size)
        while (call := pager.call()) is not None:
            yield from pager.take(self._send(call))

    def resolve(self, id_or_prefix: str) -> str:
        """The full id for a unique prefix (a full id is returned without asking the server)."""
        if _core.is_full_id(id_or_prefix):
            return id_or_prefix
        return _core.pick(id_or_prefix, (r.id for r in self.list(page_size=5000)))

    def wait(self, payload_id: str, timeout: float | None = None) -> Payload:
        """The record once the payload has ended, or as it is after `timeout` seconds."""
        waiter = _core.Waiter(payload_id, timeout)
        while True:
            record = self._send(waiter.call())
            if waiter.done(record):
                return record

    def output(self, payload_id: str, stream: StreamName = "both", offset: int = 0) -> Output:
        return self._send(_core.output(payload_id, stream, offset))

    def follow(self, payload_id: str) -> Iterator[FollowItem]:
        """Output chunks and status changes as they happen, until the payload has ended.

        Follows the payload's SSE stream, and picks it up where it broke if it breaks.
        """
        follower = _core.Follower(payload_id)
        while not follower.done:
            call = follower.call()
            headers = {**self._headers, **call.headers}
            try:
                with self._http.stream(
                    "GET", call.path, headers=headers, timeout=call.timeout
                ) as r:
                    if not r.is_success:
                        r.read()
                        _core.check(r, payload_id)
                    for line in r.iter_lines():
                        yield from follower.feed(line)
            except httpx.TransportError as exc:
                follower.broken(self._http.base_url, exc)
            else:
                if not follower.done:
                    follower.broken(self._http.base_url, None)

    def cancel(self, payload_id: str) -> Payload:
        """Cancel a payload; its record once it has ended."""
        return self._send(_core.cancel(payload_id))

    def signal(self, payload_id: str, name: str) -> Payload:
        return self._send(_core.send_signal(payload_id, name))

    def write_stdin(self, payload_id: str, data: str | bytes, close: bool = False) -> None:
        self._send(_core.write_stdin(payload_id, data, close))

    def actions(self) -> builtins.list[dict[str, Any]]:
        """The named actions this token may run, each with the JSON Schema of its args."""
        return self._send(_core.actions())

    def action(self, name: str) -> dict[str, Any]:
        return self._send(_core.action(name))

    def run_action(
        self,
        name: str,
        args: Mapping[str, Any] | None = None,
        *,
        idempotency_key: str | None = None,
    ) -> Payload:
        """Run a named action; its payload's pending record."""
        return self._send(_core.run_action(name, args or {}, idempotency_key))

    def delete(self, payload_id: str, force: bool = False) -> None:
        """Forget an ended payload; `force` cancels an active one first."""
        self._send(_core.delete(payload_id, force))
