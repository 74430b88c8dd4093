"""The one generation pipeline: /v1/generate is its n = 1 case, /v1/completions the general one.

A body is checked (`read_choices`), its choices are submitted to the engine together (`Generation`),
and then either read to their ends (`Generation.response`) or relayed as server-sent events
(`Generation.stream`). A subclass says only how its API writes tokens, ends and responses.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, replace
from typing import Any

from pydantic import BaseModel

from lyricist.model import SamplingParams
from lyricist.model.sampling import MAX_SEED

from .. import limits
from .. import protocol as p
from ..engine import Event, Finished, FinishReason, GenerationRequest, ModelEngine, Stream, TokenEvent
from ..errors import APIError, finish_error
from ..settings import Settings


@dataclass(frozen=True)
class Choices:
    """What a generation call asks for: each prompt `n` times."""

    prompts: list[str]
    n: int
    max_tokens: int
    params: SamplingParams
    stop: tuple[str, ...]
    logprobs: int | None  # None: none; k: the chosen token's and the k most likely
    stream: bool

    @property
    def prompt_of_each(self) -> list[str]:
        """Each choice's prompt, in OpenAI's order: prompt-major, then n."""
        return [prompt for prompt in self.prompts for _ in range(self.n)]


def read_choices(body: p.SamplingFields, settings: Settings, prompts: list[str], stop: Iterable[str],
                 logprobs: int | None, n: int = 1, stream: bool = False) -> Choices:
    """The checks every generation body passes, in one order: the configured limits in the order the
    model declares its fields (the prompt's length, 413, then the token count, 400), then the sampling values."""
    limits.check(body, settings)
    return Choices(prompts, n, limits.new_tokens(body, settings), sampling_params(body), tuple(stop), logprobs, stream)


def sampling_params(body: p.SamplingFields) -> SamplingParams:
    try:
        return SamplingParams(**body.model_dump(include=set(p.SamplingFields.model_fields)))
    except ValueError as error:
        raise APIError(400, str(error), code="invalid_value") from None


class Generation:
    """The choices of one call, submitted together: all or none (what was queued before a refusal is
    cancelled). Reading them to the end or leaving early, the caller cancels what still runs (`cancel`)."""

    def __init__(self, engine: ModelEngine, choices: Choices, timeout_s: float, notes: dict[str, Any]):
        self.engine, self.choices, self.notes = engine, choices, notes
        self.streams: list[Stream | _Unasked] = []
        try:
            for index, prompt in enumerate(choices.prompt_of_each):
                self.streams.append(self._submit(index, prompt, timeout_s))
        except BaseException:
            self.cancel()
            raise
        self.prompt_tokens = sum(stream.prompt_tokens for stream in self.streams)
        notes["prompt_tokens"] = self.prompt_tokens

    def _submit(self, index: int, prompt: str, timeout_s: float) -> Stream | _Unasked:
        c = self.choices
        if not c.max_tokens:
            return _Unasked(len(self.engine.tokenizer.encode(prompt, add_bos=True)))
        # choice i uses seed + i, wrapping past the largest seed so that any valid seed works
        params = c.params if c.params.seed is None else replace(c.params, seed=(c.params.seed + index) % (MAX_SEED + 1))
        return self.engine.submit(GenerationRequest(prompt, c.max_tokens, params, c.stop, c.logprobs, timeout_s,
                                                    incremental=c.stream))

    def cancel(self) -> None:
        for stream in self.streams:
            stream.cancel()

    # -- what a subclass writes ----------------------------------------------------------

    def opening_events(self) -> Iterable[str]:
        """Events before any token."""
        return ()

    def token_event(self, index: int, token: TokenEvent) -> str:
        raise NotImplementedError

    def finish_event(self, index: int, finished: Finished) -> str:
        """The event of a choice's normal end (an early one is its error's event)."""
        raise NotImplementedError

    def closing_events(self, completion_tokens: int) -> Iterable[str]:
        """Events after every choice has ended, before [DONE]."""
        return ()

    def response_body(self, results: list[tuple[list[TokenEvent], Finished]]) -> BaseModel:
        """The response of a call that was not streamed."""
        raise NotImplementedError

    # -- the two ways to read it -----------------------------------------------------------

    async def response(self) -> BaseModel:
        """Every choice read to its end; a choice the engine ended early answers with its error."""
        try:
            results = await asyncio.gather(*(stream.result() for stream in self.streams))
        finally:
            self.cancel()  # if the client left (this task was cancelled), what still runs leaves the batch
        self.notes["completion_tokens"] = sum(finished.completion_tokens for _, finished in results)
        for _, finished in results:
            if error := finish_error(finished.reason):
                raise error
        return self.response_body(results)

    async def stream(self) -> AsyncIterator[str]:
        """The server-sent events, then [DONE]. If the client leaves, the server closes this generator,
        whose `finally` cancels the choices."""
        completion_tokens = 0
        try:
            for event in self.opening_events():
                yield event
            async for index, event in self._merged():
                if isinstance(event, TokenEvent):
                    yield self.token_event(index, event)
                    continue
                completion_tokens += event.completion_tokens
                error = finish_error(event.reason)
                yield error.sse() if error else self.finish_event(index, event)
            for event in self.closing_events(completion_tokens):
                yield event
            yield p.SSE_DONE
        finally:
            self.notes["completion_tokens"] = completion_tokens
            self.cancel()

    async def _merged(self) -> AsyncIterator[tuple[int, Event]]:
        """(choice index, event) in the order they come, until every choice has ended."""
        if len(self.streams) == 1:  # the common case needs no task per choice
            async for event in self.streams[0]:
                yield 0, event
            return
        merged: asyncio.Queue[tuple[int, Event]] = asyncio.Queue()

        async def pump(index: int, stream: Stream | _Unasked) -> None:
            async for event in stream:
                await merged.put((index, event))

        pumps = [asyncio.ensure_future(pump(index, stream)) for index, stream in enumerate(self.streams)]
        try:
            open_choices = len(self.streams)
            while open_choices:
                index, event = await merged.get()
                open_choices -= isinstance(event, Finished)
                yield index, event
        finally:
            for task in pumps:
                task.cancel()


class _Unasked:
    """A choice asked for no tokens (max_tokens 0, to score an echoed prompt): ended before it began; the
    engine never sees it."""

    def __init__(self, prompt_tokens: int):
        self.prompt_tokens = prompt_tokens
        self.seed = None

    async def __aiter__(self) -> AsyncIterator[Event]:
        yield Finished(FinishReason.LENGTH, "", 0)

    async def result(self) -> tuple[list[TokenEvent], Finished]:
        return [], Finished(FinishReason.LENGTH, "", 0)

    def cancel(self) -> None:
        pass
