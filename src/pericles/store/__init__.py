"""Where records and their output live, chosen by URL: `memory://` (the default),
`sqlite:///path` (kept across restarts) or `redis://host:port/db` (shared by many hosts)."""

from __future__ import annotations

from pericles.errors import StoreUnavailable
from pericles.store.base import Store


def open_store(url: str, max_output: int) -> Store:
    """The store a URL names; each backend's module is imported only when its scheme is used."""
    scheme = url.partition("://")[0]
    if scheme == "memory":
        from pericles.store.memory import MemoryStore

        return MemoryStore(max_output)
    if scheme == "sqlite":
        from pericles.store.sqlite import SqliteStore

        return SqliteStore(url, max_output)
    if scheme == "redis":
        from pericles.store.redis import RedisStore

        return RedisStore(url, max_output)
    raise StoreUnavailable(
        f"unsupported store URL {url!r}: expected memory://, sqlite:///PATH or redis://HOST:PORT/DB"
    )


__all__ = ["Store", "open_store"]
