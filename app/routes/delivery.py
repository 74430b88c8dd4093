"""How a generation's answer reaches the client: server-sent events, or one JSON body raced against the
client leaving (a request whose client has gone must not keep its place in the batch)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from typing import Any, TypeVar

from fastapi import Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from ..errors import APIError
from ..serving.generation import Generation

T = TypeVar("T")
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}  # no proxy holds the events back
STREAMED: dict[int | str, dict[str, Any]] = {200: {
    "description": 'JSON, or with "stream": true server-sent events (docs/api.md)',
    "content": {"text/event-stream": {"schema": {  # one event: its data is JSON, or [DONE] at the end
        "type": "object", "required": ["data"], "properties": {"data": {"type": "string"}}}}}}}


async def deliver(request: Request, generation: Generation) -> BaseModel | StreamingResponse:
    if generation.choices.stream:  # if the client leaves, Starlette closes the generator, which cancels
        return StreamingResponse(generation.stream(), media_type="text/event-stream", headers=SSE_HEADERS)
    return await while_connected(request, generation.response())


async def while_connected(request: Request, work: Awaitable[T]) -> T:
    """`work`'s result; if the client leaves first, `work` is cancelled (and with it what it waits for)."""
    task = asyncio.ensure_future(work)
    watch = asyncio.ensure_future(_until_disconnected(request))
    try:
        await asyncio.wait({task, watch}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watch.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task  # its clean-up (cancelling the choices) has run before the answer
    if task.cancelled():
        raise APIError(499, "client disconnected")
    return task.result()


async def _until_disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass
