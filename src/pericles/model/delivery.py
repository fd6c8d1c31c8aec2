"""Callback deliveries: one event of one payload for one URL, and its attempts."""

from __future__ import annotations

import dataclasses
from datetime import datetime
from enum import StrEnum


class DeliveryState(StrEnum):
    #: Not sent yet, or to be tried again at `next_attempt_at`.
    PENDING = "pending"
    #: The receiver answered 2xx.
    DELIVERED = "delivered"
    #: Given up: a final answer (4xx but 429, 3xx), a refused address, or out of retries.
    FAILED = "failed"


@dataclasses.dataclass(frozen=True, slots=True)
class Attempt:
    """One try at a delivery: when, what came back (or what went wrong), how long it took."""

    at: datetime
    duration_seconds: float
    status_code: int | None = None
    error: str | None = None
    #: The start of the answer's body (at most 1 KiB, as text).
    response_excerpt: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Delivery:
    """One event of one payload for one URL, and its attempts so far.

    `body` is the record as it was at the event, sent byte for byte on every attempt.
    """

    id: str
    payload_id: str
    event: str
    url: str
    body: str
    created_at: datetime
    state: str = DeliveryState.PENDING.value
    attempts: tuple[Attempt, ...] = ()
    next_attempt_at: datetime | None = None
    #: The delivery this one sends again (`POST .../redeliver`).
    redelivery_of: str | None = None
    #: The name of the token that created the payload: its own callback key signs this.
    created_by: str | None = None

    @property
    def done(self) -> bool:
        return self.state != DeliveryState.PENDING.value
