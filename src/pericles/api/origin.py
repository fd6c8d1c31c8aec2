"""Who may reach the server from a browser: the Host check and the cross-site check.

One ASGI middleware, outermost, owns both rules for every route (API, dashboard, MCP):

- **Host** (every request): a browser sends the name it resolved as `Host`. DNS rebinding
  points an attacker's name at 127.0.0.1, so a page from that name can read our answers; a
  server that only answers to the names it is really reached by cannot be rebound. Admitted:
  the names in `--public-host`; the address the connection arrived on (an IP literal cannot
  be rebound, and health checks and Prometheus scrape by IP); the configured `--host`; and,
  when the connection arrived on a loopback address, the loopback names and addresses.
- **Cross-site** (every method but GET, HEAD and OPTIONS): a page on any site can POST a
  `text/plain` body to us without a CORS preflight. Browsers mark such requests with
  `Origin` (`null` from sandboxed frames and some redirects), `Sec-Fetch-Site`
  (`cross-site`, `same-site`) and `Referer`; any of these naming another origin refuses the
  request unless that origin is the server's own (`http(s)://<an admitted Host>`) or listed
  in `--cors-origin`. A request with none of them (curl, the CLI, the client library,
  another service) is not a browser's and passes, whatever its content type.

Both refusals are 403 problems that name the flag that would admit the request. A shared
link or a navigation to the dashboard is a GET and is never refused for its origin.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Receive, Scope, Send

from pericles.api.problems import problem_response

_SAFE_METHODS = frozenset({b"GET", b"HEAD", b"OPTIONS"})
_LOOPBACK_NAMES = frozenset({"localhost", "ip6-localhost", "ip6-loopback"})
#: The request headers both checks read.
_SIGNALS = frozenset({b"host", b"origin", b"sec-fetch-site", b"referer"})
_DEFAULT_PORTS = {"http": "80", "https": "443", "ws": "80", "wss": "443"}


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return None
    # A dual-stack socket sees IPv4 clients as ::ffff:a.b.c.d.
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def split_host(value: str) -> tuple[str, str | None]:
    """`Host` header value -> (lowercase name or address without brackets, port or None)."""
    value = value.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            return value, None
        name, rest = value[1:end], value[end + 1 :]
        return name, rest[1:] if rest.startswith(":") else None
    if value.count(":") == 1:
        name, port = value.split(":")
        return _fqdn(name), port
    return _fqdn(value), None


def _fqdn(name: str) -> str:
    """`name` without the root's trailing dot: `example.com.` is `example.com`."""
    return name[:-1] if name.endswith(".") and len(name) > 1 else name


def _is_loopback(name: str) -> bool:
    if name in _LOOPBACK_NAMES:
        return True
    address = _ip(name)
    return address is not None and address.is_loopback


class AdmittedHosts:
    """The Host names and addresses this server answers to (see the module docstring)."""

    def __init__(self, bind_host: str, public_hosts: Iterable[str]) -> None:
        names = {split_host(h)[0] for h in public_hosts if h}
        bound = split_host(bind_host)[0]
        address = _ip(bound)
        # 0.0.0.0 and :: are no one's Host; the address a connection arrives on is.
        if bound and (address is None or not address.is_unspecified):
            names.add(bound)
        self.names = frozenset(names)

    def admits(self, name: str, local_address: str | None) -> bool:
        """Whether Host `name` is admitted on a connection that arrived on `local_address`."""
        if name in self.names:
            return True
        if local_address is None:
            return False
        local = _ip(local_address)
        if local is None:
            return False
        if _ip(name) == local:
            return True
        return local.is_loopback and _is_loopback(name)


def _origin_of(url: str) -> str | None:
    """scheme://host[:port] of `url`, lowercase, no default port; None if it has no host."""
    try:
        parts = urlsplit(url.strip())
        scheme, host, port = parts.scheme.lower(), parts.hostname, parts.port
    except ValueError:
        return None
    if not scheme or not host:
        return None
    if ":" in host:
        host = f"[{host}]"
    if port is None or str(port) == _DEFAULT_PORTS.get(scheme):
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


def _netloc(host_header: str, scheme: str) -> str:
    name, port = split_host(host_header)
    shown = f"[{name}]" if ":" in name else name
    if port is None or port == _DEFAULT_PORTS.get(scheme):
        return shown
    return f"{shown}:{port}"


class BrowserGuard:
    """ASGI middleware: the Host check on every request, the cross-site check on changes."""

    def __init__(self, app: ASGIApp, hosts: AdmittedHosts, cors_origins: Iterable[str]) -> None:
        self.app = app
        self.hosts = hosts
        self.cors_origins = frozenset(o for o in map(_origin_of, cors_origins) if o is not None)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        seen: dict[bytes, str] = {}
        for key, value in scope["headers"]:
            if key in _SIGNALS:
                text = value.decode("latin-1")
                # A repeated header is judged as one list: two Hosts or two Origins that
                # differ are no name or origin we admit.
                seen[key] = f"{seen[key]}, {text}" if key in seen and seen[key] != text else text
        why = self._bad_host(scope, seen.get(b"host"))
        if why is not None:
            await self._refuse(scope, send, why, "host-not-admitted")
            return
        method = scope.get("method", "GET").encode() if scope["type"] == "http" else b"WEBSOCKET"
        if method not in _SAFE_METHODS and (why := self._cross_site(scope, seen)) is not None:
            await self._refuse(scope, send, why, "cross-site-refused")
            return
        await self.app(scope, receive, send)

    def _bad_host(self, scope: Scope, host: str | None) -> str | None:
        """Why the request's Host is refused, or None. No Host: HTTP/1.0, not a browser."""
        if host is None:
            return None
        name, _ = split_host(host)
        server = scope.get("server")
        if self.hosts.admits(name, server[0] if server else None):
            return None
        return (
            f"Host {name!r} is not a name this server is reached by (DNS rebinding guard); "
            f"start the server with --public-host {name} to admit it"
        )

    def _cross_site(self, scope: Scope, seen: dict[bytes, str]) -> str | None:
        """Why a request a browser marked as coming from another site is refused, or None."""
        fetch_site = seen.get(b"sec-fetch-site", "").strip().lower()
        claimed = seen.get(b"origin", seen.get(b"referer"))
        if claimed is None and fetch_site not in ("cross-site", "same-site"):
            return None  # not a browser's request, or a same-origin one that says so
        origin = None
        if claimed is not None and claimed.strip().lower() != "null":
            origin = _origin_of(claimed)
        if origin is not None and (
            origin in self.cors_origins or self._own(seen.get(b"host"), origin)
        ):
            return None
        shown = origin or ("null" if claimed is not None else f"a {fetch_site} page")
        return (
            f"a browser page from {shown} may not change anything on this server; "
            "start the server with --cors-origin ORIGIN to admit a page's origin"
        )

    @staticmethod
    def _own(host: str | None, origin: str) -> bool:
        # The origin of a page this server served: http(s):// and the Host it was reached by
        # (a TLS proxy in front makes the browser's scheme https while ours is http).
        if host is None:
            return False
        return any(origin == f"{s}://{_netloc(host, s)}" for s in ("http", "https"))

    @staticmethod
    async def _refuse(scope: Scope, send: Send, detail: str, slug: str) -> None:
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        response = problem_response(403, detail, slug)
        await response(scope, _no_receive, send)


async def _no_receive() -> dict[str, object]:  # pragma: no cover - a Response never reads
    return {"type": "http.disconnect"}
