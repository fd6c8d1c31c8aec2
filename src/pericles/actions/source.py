"""The actions file as the server holds it: loaded at start, loaded again on SIGHUP.

A reload replaces the catalog whole, or not at all: a file that cannot be used keeps the
actions there were, and says why in one log line. Payloads already created are ordinary
payloads and carry on as they were.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Mapping
from pathlib import Path

from pericles.actions.catalog import EMPTY, ActionsError, Catalog, load

log = logging.getLogger("pericles.actions")


class ActionSource:
    def __init__(self, path: str | Path | None, environ: Mapping[str, str]) -> None:
        """Load `path` (None: no actions); raises `ActionsError` for a file that is unusable."""
        self._path = path
        self._environ = dict(environ)
        self.catalog: Catalog = EMPTY if path is None else load(path, self._environ)
        self._loop: asyncio.AbstractEventLoop | None = None

    def reload(self) -> bool:
        """Read the file again; keep the current actions when it cannot be used."""
        if self._path is None:
            return False
        try:
            catalog = load(self._path, self._environ)
        except ActionsError as exc:
            log.error("actions: reload refused, keeping %d action(s): %s", len(self.catalog), exc)
            return False
        self.catalog = catalog
        log.info("actions: reloaded %d action(s) from %s", len(catalog), self._path)
        return True

    def watch(self) -> None:
        """Reload on SIGHUP, from the running loop; only when there is a file to reload."""
        if self._path is None:
            return
        self._loop = asyncio.get_running_loop()
        self._loop.add_signal_handler(signal.SIGHUP, self.reload)

    def unwatch(self) -> None:
        if self._loop is not None:
            self._loop.remove_signal_handler(signal.SIGHUP)
            self._loop = None
