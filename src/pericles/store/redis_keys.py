"""The Redis store's key names (see `pericles.store.redis` for the layout).

Per-payload keys share the hash tag `{id}`, so a payload's keys stay in one slot.
"""

from __future__ import annotations

from pericles.model import Status
from pericles.store import redis_lua

PREFIX = "pericles:"
CHANGES = PREFIX + "changes"
ALL = PREFIX + "all"
SEQ = PREFIX + "seq"
META = PREFIX + "meta"
DEADLINES = PREFIX + "deadlines"
#: When each ended payload ended (µs, Redis clock): retention's order (`evict_ended`).
ENDED = PREFIX + "ended"


def record_key(payload_id: str) -> str:
    return f"{PREFIX}{{{payload_id}}}"


def output_key(payload_id: str, stream: str) -> str:
    return f"{PREFIX}{{{payload_id}}}:out:{stream}"


def cancel_key(payload_id: str) -> str:
    return f"{PREFIX}{{{payload_id}}}:cancel"


def host_key(host: str) -> str:
    return f"{PREFIX}host:{host}"


def state_key(state: Status) -> str:
    return f"{PREFIX}state:{state.value}"


STATE_KEYS = [state_key(s) for s in redis_lua.STATES]


def deliveries_key(payload_id: str) -> str:
    return f"{PREFIX}{{{payload_id}}}:deliveries"


#: "<payload id> <delivery id>" of every delivery not done yet, across payloads.
UNFINISHED = PREFIX + "deliveries:unfinished"
