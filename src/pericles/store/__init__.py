"""Where records and their output live, chosen by URL: `memory://` (the default)."""

from __future__ import annotations

from pericles.store.base import ListQuery, Page, Store


def open_store(url: str, max_output: int) -> Store:
    """The store a URL names; each backend's module is imported only when its scheme is used."""
    scheme = url.partition("://")[0]
    if scheme == "memory":
        from pericles.store.memory import MemoryStore

        return MemoryStore(max_output)
    raise ValueError(f"unsupported store URL {url!r}: expected memory://")


__all__ = ["ListQuery", "Page", "Store", "open_store"]
