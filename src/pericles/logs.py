"""Logging set-up for the entry points: plain lines, or one JSON object a line.

Library code only calls `logging.getLogger("pericles.<layer>")`; the format is chosen here,
once, for our loggers and for uvicorn's alike, so every line the server writes is in it.
"""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime
from typing import Any

import orjson

PLAIN = "%(asctime)s %(levelname)s %(name)s: %(message)s"


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
        if record.exc_info:
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


def log_config(level: str, fmt: str) -> dict[str, Any]:
    """A `logging.config.dictConfig` for the server, uvicorn's loggers included."""
    formatter: dict[str, Any] = {"()": JSONFormatter} if fmt == "json" else {"format": PLAIN}
    handler = {"class": "logging.StreamHandler", "formatter": "main", "stream": "ext://sys.stderr"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"main": formatter},
        "handlers": {"main": handler},
        "filters": {"redact": {"()": RedactQuerySecrets}},
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
