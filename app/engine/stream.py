"""A generation as its client sees it, on the asyncio side."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable

from .events import Event, Finished, TokenEvent


class Stream:
    """One request's events, on the asyncio side: TokenEvent... then one Finished. `cancel` is the handle
    the engine gave it: the sequence ends (reason "cancelled") and frees its slot before the next step."""

    def __init__(self, seed: int, prompt_tokens: int, events: asyncio.Queue, cancel: Callable[[], None]):
        self.id = f"gen-{uuid.uuid4().hex[:24]}"
        self.seed = seed
        self.prompt_tokens = prompt_tokens
        self._events = events
        self._cancel = cancel
        self._read_to_end = False  # this reader's own note: the sequence's end is the worker's

    async def __aiter__(self) -> AsyncIterator[Event]:
        while True:
            event = await self._events.get()
            if isinstance(event, Finished):
                self._read_to_end = True
                yield event
                return
            yield event

    def cancel(self) -> None:
        """End the generation, if it is still running: safe to call in any case, from the event loop."""
        if not self._read_to_end:
            self._cancel()

    async def result(self) -> tuple[list[TokenEvent], Finished]:
        tokens = []
        async for event in self:
            if isinstance(event, Finished):
                return tokens, event
            tokens.append(event)
        raise AssertionError("unreachable")
