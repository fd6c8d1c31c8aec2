"""Callbacks: telling other systems when a payload starts or ends, signed, retried, logged.

Fed by the one write path (`Records`): each published record whose move is an event some
callback asks for (`started`, or a terminal status) becomes one `model.Delivery` per URL,
kept in the store before it is sent. Sending never slows the payload path: deliveries wait
in a queue served by `--callback-concurrency` senders, and `/metrics` shows that backlog.

The rules of an attempt's outcome live here, once:

- 2xx: delivered. 429 and 5xx, connection errors and timeouts: tried again after
  `--callback-backoff` seconds, doubling with jitter up to `MAX_DELAY`, or after the
  answer's `Retry-After` when given, up to `--callback-retries` retries; then failed.
- any other answer (3xx: redirects are not followed; 4xx) and an address the guard refuses:
  failed at once, for trying again cannot change it.

With a durable store, deliveries still pending at a restart are taken up again (`resume`);
a receiver that dedupes on `Pericles-Delivery` then sees each event once.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import email.utils
import logging
import random
import time
from datetime import datetime, timedelta

import orjson

from pericles.errors import DeliveryNotFound, PayloadNotFound
from pericles.metrics import Metrics
from pericles.model import (
    Attempt,
    Delivery,
    DeliveryState,
    Payload,
    Status,
    new_id,
    record_fields,
    utcnow,
)
from pericles.outbound.sender import Answer, Sender
from pericles.outbound.signing import signature
from pericles.settings import Settings
from pericles.store import Store

log = logging.getLogger("pericles.callbacks")

#: The longest wait between two attempts, whatever the backoff or Retry-After says.
MAX_DELAY = 600.0
_JSON = orjson.OPT_UTC_Z | orjson.OPT_PASSTHROUGH_DATACLASS


def event_of(record: Payload, before: Status | None) -> str | None:
    """The callback event a move to `record` is, if any: `started` or the terminal status."""
    if record.terminal:
        return record.state.value
    if record.state is Status.WORKING and before is Status.PENDING:
        return "started"
    return None


def retry_delay(retries_so_far: int, backoff: float, retry_after: str | None) -> float:
    """Seconds before the next attempt: `Retry-After` when it parses, else the backoff."""
    if retry_after is not None:
        given = _retry_after_seconds(retry_after)
        if given is not None:
            return min(max(given, 0.0), MAX_DELAY)
    # Jitter: receivers that failed together are not hit again all at the same moment.
    jitter: float = random.uniform(0.75, 1.25)
    return min(backoff * 2.0 ** min(retries_so_far, 60) * jitter, MAX_DELAY)


def _retry_after_seconds(value: str) -> float | None:
    value = value.strip()
    if value.isdigit():
        return float(value)
    with contextlib.suppress(TypeError, ValueError, IndexError):
        when = email.utils.parsedate_to_datetime(value)
        return (when - utcnow()).total_seconds()
    return None


class Callbacks:
    """The delivery engine: creates, keeps, sends and retries deliveries."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        sender: Sender,
        metrics: Metrics | None,
        token_secrets: dict[str, str] | None = None,
    ) -> None:
        self._store = store
        self._sender = sender
        self._metrics = metrics
        self._server_urls = list(settings.callback_url)
        secret = settings.callback_secret
        self._secret = secret.get_secret_value() if secret is not None else None
        #: Keys of tokens that have their own (`callback_secret` in the tokens file).
        self._token_secrets = dict(token_secrets or {})
        self._retries = settings.callback_retries
        self._backoff = settings.callback_backoff
        self._concurrency = settings.callback_concurrency
        #: Ids of deliveries due now, waiting for a sender: the backlog.
        self._due: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
        self._timers: dict[str, asyncio.TimerHandle] = {}
        #: Deliveries waiting (timer or queue) or being sent: each is in one place at a time.
        self._scheduled: set[str] = set()
        self._senders: list[asyncio.Task[None]] = []
        self._background: set[asyncio.Task[None]] = set()
        if metrics is not None:
            metrics.track_callback_backlog(self._due.qsize)

    @property
    def backlog(self) -> int:
        return self._due.qsize()

    # -- starting and stopping -------------------------------------------------------------

    async def resume(self) -> None:
        """Start the senders, and take up the deliveries the store kept pending."""
        self._senders = [asyncio.create_task(self._serve()) for _ in range(self._concurrency)]
        for delivery in await self._store.unfinished_deliveries():
            self._schedule(delivery)

    async def close(self) -> None:
        """Stop sending; pending deliveries stay in the store for the next start."""
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        for task in self._senders:
            task.cancel()
        await asyncio.gather(*self._senders, *self._background, return_exceptions=True)
        await self._sender.close()

    # -- new deliveries --------------------------------------------------------------------

    def _urls(self, record: Payload, event: str) -> list[str]:
        urls = [c["url"] for c in record.callbacks or () if event in c["events"]]
        if event != "started":
            urls += self._server_urls
        return urls

    def wanted(self, record: Payload, before: Status | None) -> str | None:
        """The event a move to `record` is, when some callback asks for it."""
        event = event_of(record, before)
        return event if event is not None and self._urls(record, event) else None

    def published(self, record: Payload, before: Status | None) -> None:
        """Called by `Records` for every write: start the deliveries its event asks for."""
        event = event_of(record, before)
        if event is None:
            return
        urls = self._urls(record, event)
        if not urls:
            return
        body = orjson.dumps(record_fields(record), option=_JSON).decode()
        now = utcnow()
        deliveries = [
            Delivery(new_id(), record.id, event, url, body, now, created_by=record.created_by)
            for url in urls
        ]
        self._spawn(self._start(deliveries))

    async def redeliver(self, payload_id: str, delivery_id: str) -> Delivery:
        """Send a delivery's body again, as a new delivery; raises `PayloadNotFound`."""
        for kept in await self._store.deliveries(payload_id):
            if kept.id == delivery_id:
                again = Delivery(
                    new_id(),
                    payload_id,
                    kept.event,
                    kept.url,
                    kept.body,
                    utcnow(),
                    redelivery_of=kept.id,
                    created_by=kept.created_by,
                )
                await self._start([again])
                return again
        raise DeliveryNotFound(payload_id, delivery_id)

    async def _start(self, deliveries: list[Delivery]) -> None:
        for delivery in deliveries:
            try:
                await self._store.put_delivery(delivery)
            except PayloadNotFound:  # forgotten already (deleted): nobody to tell about
                return
            self._schedule(delivery)

    def _schedule(self, delivery: Delivery) -> None:
        if delivery.id in self._scheduled:
            return
        self._scheduled.add(delivery.id)
        key = (delivery.payload_id, delivery.id)
        delay = 0.0
        if delivery.next_attempt_at is not None:
            delay = (delivery.next_attempt_at - utcnow()).total_seconds()
        if delay <= 0:
            self._due.put_nowait(key)
            return
        self._timers[delivery.id] = asyncio.get_running_loop().call_later(delay, self._wake, key)

    def _wake(self, key: tuple[str, str]) -> None:
        self._timers.pop(key[1], None)
        self._due.put_nowait(key)

    def _spawn(self, coro: object) -> None:
        task: asyncio.Task[None] = asyncio.create_task(coro)  # type: ignore[arg-type]
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- sending ---------------------------------------------------------------------------

    async def _serve(self) -> None:
        while True:
            payload_id, delivery_id = await self._due.get()
            try:
                await self._attempt(payload_id, delivery_id)
            except Exception:
                log.exception("callback delivery %s: the attempt failed unexpectedly", delivery_id)
                self._scheduled.discard(delivery_id)

    async def _current(self, payload_id: str, delivery_id: str) -> Delivery | None:
        try:
            kept = await self._store.deliveries(payload_id)
        except PayloadNotFound:
            return None
        return next((d for d in kept if d.id == delivery_id and not d.done), None)

    async def _attempt(self, payload_id: str, delivery_id: str) -> None:
        delivery = await self._current(payload_id, delivery_id)
        if delivery is None:
            self._scheduled.discard(delivery_id)
            return
        body = delivery.body.encode()
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "Pericles-Callbacks",
            "Pericles-Event": delivery.event,
            "Pericles-Delivery": delivery.id,
            "Pericles-Timestamp": timestamp,
        }
        secret = self._token_secrets.get(delivery.created_by or "", self._secret)
        if secret is not None:
            headers["Pericles-Signature"] = signature(secret, timestamp, body)
        at = utcnow()
        answer = await self._sender.post(delivery.url, body, headers)
        updated = self._outcome(delivery, answer, at)
        self._scheduled.discard(delivery_id)
        with contextlib.suppress(PayloadNotFound):  # forgotten while it was being sent
            await self._store.put_delivery(updated)
            if not updated.done:
                self._schedule(updated)

    def _outcome(self, delivery: Delivery, answer: Answer, at: datetime) -> Delivery:
        attempt = Attempt(
            at, round(answer.duration_seconds, 6), answer.status_code, answer.error, answer.excerpt
        )
        attempts = (*delivery.attempts, attempt)
        code = answer.status_code
        if code is not None and 200 <= code < 300:
            outcome, state, next_at = "delivered", DeliveryState.DELIVERED, None
        elif answer.refused or (code is not None and code != 429 and code < 500):
            outcome, state, next_at = "failed", DeliveryState.FAILED, None
        elif len(attempts) > self._retries:
            outcome, state, next_at = "gave_up", DeliveryState.FAILED, None
        else:
            delay = retry_delay(len(attempts) - 1, self._backoff, answer.retry_after)
            outcome, state, next_at = "retry", DeliveryState.PENDING, at + timedelta(seconds=delay)
        if self._metrics is not None:
            self._metrics.callback(outcome, answer.duration_seconds)
        if state is not DeliveryState.PENDING:
            log.info(
                "callback %s of payload %s to %s: %s after %d attempt(s)",
                delivery.event,
                delivery.payload_id,
                delivery.url,
                state.value,
                len(attempts),
            )
        return dataclasses.replace(
            delivery, state=state.value, attempts=attempts, next_attempt_at=next_at
        )
