"""JSON as the seed prints it: four-space indents, the record's fields in the seed's order."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import orjson
from starlette.responses import Response

from pericles.model import Payload, record_fields

_COMPACT = orjson.OPT_UTC_Z | orjson.OPT_PASSTHROUGH_DATACLASS
_OPTIONS = _COMPACT | orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE


def _default(value: Any) -> Any:
    if isinstance(value, Payload):
        return record_fields(value)
    raise TypeError(f"cannot render {type(value).__name__} as JSON")


def compact(value: Any) -> bytes:
    """`value` as one line of JSON, records as `record_fields` shows them (for SSE data)."""
    return orjson.dumps(value, default=_default, option=_COMPACT)


def _widen(line: bytes) -> bytes:
    return line[: len(line) - len(line.lstrip(b" "))] + line


def dumps(value: Any) -> bytes:
    """`value` as JSON with four-space indents, like Python's `json.dumps(indent=4)`.

    orjson only indents by two, and is some 30 times faster than the json module, so we
    let it write two and double them. Compact JSON has spaces only inside strings: when it
    holds no double space, every double space of the indented form is indentation, and one
    replace does it (measured 4.8 us against 21.6 us with a regular expression).
    """
    text = orjson.dumps(value, default=_default, option=_OPTIONS)
    if b"  " not in compact(value):
        return text.replace(b"  ", b"    ")
    return b"\n".join([_widen(line) for line in text.split(b"\n")])


class RenderCache:
    """The rendered bytes of recently read records, reused while the record is unchanged.

    Records are immutable and a change makes a new object, so the cached bytes are valid
    exactly while the store still hands out the same object. Bounded: least recently used
    entries go first.
    """

    def __init__(self, size: int = 4096) -> None:
        self._size = size
        self._entries: OrderedDict[str, tuple[object, bytes]] = OrderedDict()

    def render(self, key: str, record: object) -> bytes:
        entry = self._entries.get(key)
        if entry is not None and entry[0] is record:
            self._entries.move_to_end(key)
            return entry[1]
        body = dumps(record)
        self._entries[key] = (record, body)
        self._entries.move_to_end(key)
        if len(self._entries) > self._size:
            self._entries.popitem(last=False)
        return body


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return dumps(content)
