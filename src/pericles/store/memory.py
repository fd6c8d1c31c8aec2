"""The in-memory store: the seed's behaviour, nothing survives a restart.

It persists nothing: every rule is the base `Store`'s, and every hook a no-op.
"""

from __future__ import annotations

from pericles.store.base import Store


class MemoryStore(Store):
    pass
