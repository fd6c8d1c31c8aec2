"""A payload's callback deliveries: the log of attempts, and sending one again."""

from __future__ import annotations

import dataclasses
from typing import Any

from fastapi import APIRouter
from starlette.responses import Response

from pericles.api.deps import ServiceDep
from pericles.api.render import JSONResponse
from pericles.model import Delivery

router = APIRouter()


def _shown(delivery: Delivery) -> dict[str, Any]:
    """A delivery as listed: everything but the body (the record, readable at its own URL)."""
    return {
        "id": delivery.id,
        "event": delivery.event,
        "url": delivery.url,
        "state": delivery.state,
        "created_at": delivery.created_at,
        "next_attempt_at": delivery.next_attempt_at,
        "redelivery_of": delivery.redelivery_of,
        "attempts": [dataclasses.asdict(attempt) for attempt in delivery.attempts],
    }


@router.get(
    "/payloads/{payload_id}/deliveries",
    summary="The payload's callback deliveries, oldest first, each with its attempts "
    "(time, status code, duration, error, the start of the answer)",
)
async def list_deliveries(payload_id: str, service: ServiceDep) -> Response:
    deliveries = await service.deliveries(payload_id)
    return JSONResponse({"deliveries": [_shown(d) for d in deliveries]})


@router.post(
    "/payloads/{payload_id}/deliveries/{delivery_id}/redeliver",
    status_code=202,
    summary="Send a delivery's event again (the same body), as a new delivery",
)
async def redeliver(payload_id: str, delivery_id: str, service: ServiceDep) -> Response:
    delivery = await service.redeliver(payload_id, delivery_id)
    return JSONResponse(_shown(delivery), status_code=202)
