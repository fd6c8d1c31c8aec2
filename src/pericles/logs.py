"""Logging set-up for the entry points: plain lines, or one JSON object a line.

Library code only calls `logging.getLogger("pericles.<layer>")`; the format is chosen here,
once, for our loggers and for uvicorn's alike, so every line the server writes is in it.
"""

from __future__ import annotations

import asyncio
import logging
import logging.config
import re
import sys
import time
from datetime import UTC, datetime
from typing import Any, Protocol, TextIO

import orjson


class Redacts(Protocol):
    """What finds secrets in a text (`tokens.TokenSet`); false when it has none."""

    def __bool__(self) -> bool: ...

    def redact(self, text: str) -> str: ...


PLAIN = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class PlainFormatter(logging.Formatter):
    """`PLAIN` lines; the time's text is made once a second, not once a line.

    A busy server writes a few lines per payload (its lifecycle, the access line), and
    `time.strftime` was most of what formatting one cost.
    """

    def __init__(self) -> None:
        super().__init__(PLAIN)
        self._second = -1
        self._text = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        second = int(record.created)
        if second != self._second:
            self._text = time.strftime(self.default_time_format, self.converter(second))
            self._second = second
        return f"{self._text},{int(record.msecs):03d}"


class TurnHandler(logging.StreamHandler[TextIO]):
    """Writes the lines of one turn of the event loop together, at the end of the turn.

    A busy server logs a few lines per payload and one per request, and one `write` each
    was the largest single cost of logging. Lines logged on a thread with a running loop
    wait for that turn's end (`call_soon`), a few milliseconds at most; lines from anywhere
    else are written at once, after whatever is waiting, so the order holds. `flush()` and
    `close()` (logging's shutdown at exit) write what is left; a kill -9 loses at most the
    lines of the turn it interrupted.
    """

    def __init__(self, stream: TextIO | None = None) -> None:
        super().__init__(stream or sys.stderr)
        self._waiting: list[str] = []
        self._scheduled = False

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record) + self.terminator
        except Exception:
            self.handleError(record)
            return
        self._waiting.append(line)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._write()
            return
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._turn_ended)

    def _turn_ended(self) -> None:
        self.acquire()
        try:
            self._scheduled = False
            self._write()
        finally:
            self.release()

    def _write(self) -> None:
        """Write what waits (the caller holds the handler's lock)."""
        if not self._waiting:
            return
        text = "".join(self._waiting)
        self._waiting.clear()
        try:
            self.stream.write(text)
            self.stream.flush()
        except Exception:  # a closed or full stream: as `StreamHandler` does, say so
            self.handleError(logging.makeLogRecord({"msg": text.rstrip()}))

    def flush(self) -> None:
        self.acquire()
        try:
            self._write()
            super().flush()
        finally:
            self.release()


def _lean_records() -> None:
    """Leave out of every log record what no line of ours shows (the logging HOWTO's
    "Optimization"): the caller's file and line, thread and process names and ids."""
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False


class JSONFormatter(logging.Formatter):
    """One JSON object per record, with the structured fields a record carries."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "pericles", None)
        if isinstance(fields, dict):
            line.update(fields)
        args = record.args
        if record.name == "uvicorn.access" and isinstance(args, tuple) and len(args) == 5:
            line.update(client=args[0], method=args[1], path=args[2], status=args[4])
        if record.exc_text:
            line["exception"] = record.exc_text
        elif record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


# A query parameter whose name looks like a credential: its value is never written.
_SECRET_PARAM = re.compile(
    r"((?:^|[?&;])[^=&;]*(?:token|secret|password|auth)[^=&;]*=)[^&;]*", re.I
)


class RedactQuerySecrets(logging.Filter):
    """Blanks credential-like query values in uvicorn's access lines.

    The server reads tokens from the Authorization header only, but a client may still put
    one in a URL (`?access_token=...`); the request is refused, and its line must not keep
    the secret.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if (
            isinstance(args, tuple)
            and len(args) == 5
            and isinstance(args[2], str)
            and "?" in args[2]
        ):
            path = _SECRET_PARAM.sub(r"\1[redacted]", args[2])
            record.args = (*args[:2], path, *args[3:])
        return True


class RedactTokens(logging.Filter):
    """Replaces every token secret in a record by `[redacted]`, whatever carried it.

    A client may put a token anywhere: a query value under any name, a path segment, a
    command's params. On the one handler every line goes through, the message, its
    arguments, its structured fields and its traceback are searched (by hash: see
    `TokenSet.redact`), so no line the server writes holds a token.
    """

    def __init__(self, tokens: Redacts) -> None:
        super().__init__()
        self.tokens = tokens

    def _clean(self, value: Any) -> Any:
        return self.tokens.redact(value) if isinstance(value, str) else value

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.tokens:
            return True
        record.msg = self._clean(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(self._clean(a) for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {k: self._clean(v) for k, v in record.args.items()}
        fields = getattr(record, "pericles", None)
        if isinstance(fields, dict):
            record.pericles = {k: self._clean(v) for k, v in fields.items()}
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.tokens.redact(record.exc_text)
        return True


def log_config(level: str, fmt: str, tokens: Redacts | None = None) -> dict[str, Any]:
    """A `logging.config.dictConfig` for the server, uvicorn's loggers included.

    With `tokens`, their secrets are redacted from every line (`RedactTokens`).
    """
    formatter: dict[str, Any] = {"()": JSONFormatter if fmt == "json" else PlainFormatter}
    handler: dict[str, Any] = {
        "()": TurnHandler,
        "formatter": "main",
        "stream": "ext://sys.stderr",
    }
    filters: dict[str, Any] = {"redact": {"()": RedactQuerySecrets}}
    if tokens:
        filters["tokens"] = {"()": RedactTokens, "tokens": tokens}
        handler["filters"] = ["tokens"]
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"main": formatter},
        "handlers": {"main": handler},
        "filters": filters,
        "loggers": {
            "pericles": {"handlers": ["main"], "level": level.upper(), "propagate": False},
            "uvicorn": {"handlers": ["main"], "level": level.upper(), "propagate": False},
            "uvicorn.error": {"level": level.upper()},
            "uvicorn.access": {
                "handlers": ["main"],
                "filters": ["redact"],
                "level": level.upper(),
                "propagate": False,
            },
        },
        "root": {"handlers": ["main"], "level": "WARNING"},
    }


def configure(level: str, fmt: str, tokens: Redacts | None = None) -> dict[str, Any]:
    """Set up logging for an entry point (`log_config`, records kept lean); the config, for
    uvicorn to apply again as it starts."""
    _lean_records()
    config = log_config(level, fmt, tokens)
    logging.config.dictConfig(config)
    return config
