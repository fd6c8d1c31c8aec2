"""The Redis store's callback deliveries: kept in Redis beside their record, gone with it.

A payload's deliveries are one hash (`{id}:deliveries`, delivery id -> JSON); those not done
yet are also listed across payloads, for a replica that starts to take them up. Which API
replica sends an event's callbacks is claimed in the record's own hash (`CLAIM_EVENT`).
"""

from __future__ import annotations

import builtins
from typing import Any

from pydantic import TypeAdapter

from pericles.errors import PayloadNotFound
from pericles.model import Delivery
from pericles.store.redis_keys import UNFINISHED, deliveries_key, record_key

_DELIVERIES = TypeAdapter(Delivery)


class RedisDeliveries:
    """The delivery methods of `RedisStore` (its client is `_redis`, typed loosely there)."""

    _redis: Any
    _claim_event: Any

    async def put_delivery(self, delivery: Delivery) -> None:
        payload_id = delivery.payload_id
        member = f"{payload_id} {delivery.id}"
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.exists(record_key(payload_id))
            pipe.hset(deliveries_key(payload_id), delivery.id, _DELIVERIES.dump_json(delivery))
            if delivery.done:
                pipe.srem(UNFINISHED, member)
            else:
                pipe.sadd(UNFINISHED, member)
            exists = (await pipe.execute())[0]
        if not exists:  # deleted meanwhile: what was just written goes too
            await self._redis.delete(deliveries_key(payload_id))
            await self._redis.srem(UNFINISHED, member)
            raise PayloadNotFound(payload_id)

    async def deliveries(self, payload_id: str) -> builtins.list[Delivery]:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.exists(record_key(payload_id))
            pipe.hvals(deliveries_key(payload_id))
            exists, values = await pipe.execute()
        if not exists:
            raise PayloadNotFound(payload_id)
        kept = [_DELIVERIES.validate_json(value) for value in values]
        return sorted(kept, key=lambda d: (d.created_at, d.id))

    async def unfinished_deliveries(self) -> builtins.list[Delivery]:
        found = []
        for member in await self._redis.smembers(UNFINISHED):
            payload_id, _, delivery_id = member.decode().partition(" ")
            value = await self._redis.hget(deliveries_key(payload_id), delivery_id)
            if value is None:  # its payload was forgotten
                await self._redis.srem(UNFINISHED, member)
                continue
            delivery = _DELIVERIES.validate_json(value)
            if not delivery.done:
                found.append(delivery)
        return found

    async def claim_event(self, payload_id: str, event: str) -> bool:
        """Whether this caller is the one to send `event`'s callbacks for the payload: the
        first to ask, of every API replica that heard the change. Kept in the record's hash,
        so it goes with the record."""
        claimed = await self._claim_event(keys=[record_key(payload_id)], args=[f"cb:{event}"])
        return bool(claimed)
