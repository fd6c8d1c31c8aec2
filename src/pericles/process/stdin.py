"""The server's end of a payload's stdin pipe: writes queued and sent as the pipe drains."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os

log = logging.getLogger("pericles.process")


class StdinClosed(Exception):
    """The pipe is closed, or closing: nothing more may be written."""


class StdinFull(Exception):
    """More bytes are queued than the writer's limit allows; try again once it drains."""


class StdinWriter:
    """Writes to a non-blocking pipe from the event loop, never blocking it.

    Bytes wait in a queue while the pipe is full; `close()` closes the pipe once they are
    written. When the reader goes away (EPIPE) whatever is queued is dropped.
    """

    def __init__(self, fd: int, loop: asyncio.AbstractEventLoop, limit: int) -> None:
        os.set_blocking(fd, False)
        self._fd: int | None = fd
        self._loop = loop
        self._limit = limit
        self._queue: collections.deque[memoryview] = collections.deque()
        self._queued = 0
        self._closing = False
        self._watching = False

    @property
    def closed(self) -> bool:
        return self._fd is None or self._closing

    def write(self, data: bytes) -> None:
        """Queue `data`; raises `StdinClosed` or `StdinFull`."""
        if self.closed:
            raise StdinClosed
        if self._queued + len(data) > self._limit and self._queued:
            raise StdinFull
        if data:
            self._queue.append(memoryview(data))
            self._queued += len(data)
            self._flush()

    def close(self) -> None:
        """Close the pipe once what is queued has been written."""
        self._closing = True
        self._flush()

    def abort(self) -> None:
        """Close now, dropping anything queued (the process has ended)."""
        self._queue.clear()
        self._queued = 0
        self._closing = True
        self._close_fd()

    def _flush(self) -> None:
        fd = self._fd
        if fd is None:
            return
        while self._queue:
            chunk = self._queue[0]
            try:
                written = os.write(fd, chunk)
            except BlockingIOError:
                self._watch()
                return
            except OSError as exc:  # EPIPE: the reader has closed its end
                log.debug("stdin write failed: %s", exc)
                self.abort()
                return
            self._queued -= written
            if written == len(chunk):
                self._queue.popleft()
            else:
                self._queue[0] = chunk[written:]
        self._unwatch()
        if self._closing:
            self._close_fd()

    def _watch(self) -> None:
        if not self._watching and self._fd is not None:
            self._loop.add_writer(self._fd, self._flush)
            self._watching = True

    def _unwatch(self) -> None:
        if self._watching and self._fd is not None:
            self._loop.remove_writer(self._fd)
            self._watching = False

    def _close_fd(self) -> None:
        self._unwatch()
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None
