"""A payload's output as plain text: read from an offset, or followed like `tail -f`."""

from __future__ import annotations

import codecs
from collections.abc import AsyncIterator
from typing import Annotated, Literal

from fastapi import APIRouter, Query
from starlette.responses import Response, StreamingResponse

from pericles.api.deps import ServiceDep
from pericles.model import Piece, next_offset
from pericles.service import Service

router = APIRouter()

StreamName = Literal["stdout", "stderr", "both"]
TEXT = "text/plain; charset=utf-8"


@router.get(
    "/payloads/{payload_id}/output",
    summary="A payload's output",
    response_class=Response,
    responses={
        200: {
            "content": {"text/plain": {"schema": {"type": "string"}}},
            "description": "The bytes from `offset` on, invalid UTF-8 replaced. "
            "`Pericles-Output-Dropped` says how many bytes of the range were dropped; "
            "`Pericles-Output-Next-Offset` is where to read next.",
        }
    },
)
async def get_output(
    payload_id: str,
    service: ServiceDep,
    stream: Annotated[StreamName, Query(description="`both`: interleaved as read")] = "both",
    offset: Annotated[int, Query(ge=0, description="Byte offset in the stream")] = 0,
    follow: Annotated[bool, Query(description="Keep streaming until the payload ends")] = False,
) -> Response:
    if follow:
        await service.get(payload_id)  # a 404 now, not in the middle of a stream
        return StreamingResponse(
            _follow(service, payload_id, stream, offset),
            media_type=TEXT,
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    data, dropped = await service.read_output(payload_id, stream, offset)
    headers = {"Pericles-Output-Next-Offset": str(next_offset(offset, len(data), dropped))}
    if dropped:
        headers["Pericles-Output-Dropped"] = str(dropped)
    return Response(data.decode("utf-8", "replace"), media_type=TEXT, headers=headers)


async def _follow(
    service: Service, payload_id: str, stream: StreamName, offset: int
) -> AsyncIterator[bytes]:
    if stream == "both":
        positions = await service.output_positions(payload_id, offset)
    else:
        positions = {stream: offset}
    # One decoder per stream, so a character split across two reads comes out whole.
    decoders = {name: codecs.getincrementaldecoder("utf-8")("replace") for name in positions}
    async for item in service.follow(payload_id, positions):
        if isinstance(item, Piece):
            text = decoders[item.stream].decode(item.data)
            if text:
                yield text.encode()
    for decoder in decoders.values():
        rest = decoder.decode(b"", final=True)
        if rest:
            yield rest.encode()
