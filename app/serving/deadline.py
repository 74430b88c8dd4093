"""Every request's work ends at LYRICIST_REQUEST_TIMEOUT_S: the engine's work is cancelled (a sliced job stops
before its next step, docs/serving.md) and the client gets a 504. Generations carry their own deadline into the
engine (a stream's error event); everything else goes through `within_deadline`."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from ..engine import FinishReason
from ..errors import finish_error
from ..settings import Settings

T = TypeVar("T")


async def within_deadline(work: Awaitable[T], settings: Settings) -> T:
    try:
        return await asyncio.wait_for(work, settings.request_timeout_s)
    except TimeoutError:
        raise finish_error(FinishReason.TIMEOUT) from None
