"""Where callbacks may connect: public addresses only, unless the deployer allows more.

The check is made on the address actually connected to, after DNS resolution and at connect
time: the network backend below resolves the name, checks every address it got, and then
connects to a checked address itself. A name that resolves to 127.0.0.1 (or that resolves
to a public address once and a private one the next time: DNS rebinding) never reaches a
private address, because no second lookup happens between the check and the connection.
TLS still verifies the certificate against the URL's host name (httpcore passes the origin's
host as the server name, whatever address the stream connects to).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable

import httpcore
import httpx

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class AddressRefused(httpcore.ConnectError):
    """A callback's host resolved to an address it may not reach. Final: never retried."""


def _forbidden(address: Address) -> str | None:
    """Why `address` is closed by default, or None for a public unicast address."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return _forbidden(address.ipv4_mapped)
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link-local"
    if address.is_multicast:
        return "multicast"
    if address.is_unspecified:
        return "unspecified"
    if address.is_private or address.is_reserved or not address.is_global:
        return "private"
    return None


class Allowed:
    """The deployer's `--callback-allow` entries: networks (CIDR or one address) and host names."""

    def __init__(self, entries: Iterable[str]) -> None:
        self.networks: list[Network] = []
        self.hosts: set[str] = set()
        for entry in entries:
            try:
                self.networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                self.hosts.add(entry.lower().rstrip("."))

    def refusal(self, host: str, address: Address) -> str | None:
        """Why `host` at `address` may not be reached, or None when it may."""
        if host.lower().rstrip(".") in self.hosts:
            return None
        if any(address in network for network in self.networks):
            return None
        why = _forbidden(address)
        if why is None:
            return None
        return f"{host} resolves to {address}, a {why} address (allow it with --callback-allow)"


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's default backend, connecting only to addresses `allowed` lets through."""

    def __init__(self, allowed: Allowed) -> None:
        self._allowed = allowed
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                host, port, type=socket.SOCK_STREAM
            )
        except OSError as exc:
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from exc
        addresses = list(dict.fromkeys(ipaddress.ip_address(info[4][0]) for info in infos))
        # Only addresses that pass are ever connected to: a name resolving to a public and
        # a private address reaches the public one only.
        allowed = [a for a in addresses if self._allowed.refusal(host, a) is None]
        if not allowed:
            first = self._allowed.refusal(host, addresses[0]) if addresses else None
            raise AddressRefused(first or f"{host} resolves to no address")
        last: Exception | None = None
        for address in allowed:
            try:
                return await self._inner.connect_tcp(
                    str(address), port, timeout, local_address, socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
        assert last is not None
        raise last

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise AddressRefused("callbacks never connect to Unix sockets")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def guarded_transport(allowed: Allowed, max_connections: int) -> httpx.AsyncHTTPTransport:
    """An httpx transport whose every connection goes through `GuardedBackend`.

    httpx 0.28 takes no network backend, so the transport's pool is replaced by one built
    with ours (same TLS defaults); the test of a name resolving to 127.0.0.1 fails if this
    ever stops taking effect.
    """
    transport = httpx.AsyncHTTPTransport(retries=0)
    transport._pool = httpcore.AsyncConnectionPool(
        ssl_context=httpx.create_ssl_context(),
        max_connections=max_connections,
        max_keepalive_connections=max_connections,
        keepalive_expiry=5.0,
        http1=True,
        http2=False,
        retries=0,
        network_backend=GuardedBackend(allowed),
    )
    return transport
