"""/v1/completions: OpenAI's Completions API over the same pipeline as /v1/generate."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Iterator
from typing import Any

from lyricist.model.scoring import Score

from .. import protocol as p
from ..engine import Finished, FinishReason, ModelEngine, TokenEvent
from ..errors import APIError
from ..registry import ModelRegistry
from ..settings import Settings
from .generation import Choices, Generation, read_choices
from .score import scored_pieces

UNSUPPORTED = ("presence_penalty", "frequency_penalty")  # the model has CTRL's repetition_penalty instead

# One piece in OpenAI's logprobs: its text, its bytes, its logprob, the top alternatives (None: not asked for),
# and how many characters it adds to the choice's text (its offset moves on by that).
Piece = tuple[str, bytes, float | None, dict[str, float] | None, int]


async def complete(body: p.CompletionRequest, settings: Settings, registry: ModelRegistry,
                   notes: dict[str, Any]) -> Completion:
    for name in UNSUPPORTED:
        if getattr(body, name):
            raise APIError(400, f"{name} is not supported (use repetition_penalty); it must be 0", name, "unsupported")
    choices = read_choices(body, settings, body.prompts, body.stop_list, body.logprobs, n=body.n, stream=body.stream)
    engine = registry.get(body.model)
    notes.update(model=engine.name, prompt=body.prompt)
    completion = Completion(engine, choices, settings.request_timeout_s, notes, body)
    if body.echo:
        try:
            for prompt in set(body.prompts):
                completion.echoed[prompt] = await engine.score(prompt)
        except BaseException:  # the queue is full or the server stops: what was queued must not run unread
            completion.cancel()
            raise
    return completion


class Completion(Generation):
    def __init__(self, engine: ModelEngine, choices: Choices, timeout_s: float, notes: dict[str, Any],
                 body: p.CompletionRequest):
        super().__init__(engine, choices, timeout_s, notes)
        self.id = f"cmpl-{uuid.uuid4().hex[:24]}"
        self.created = int(time.time())
        self.body = body
        self.echoed: dict[str, Score] = {}  # by prompt, with echo: the prompt's own logprobs
        self.offsets = [len(prompt) if body.echo else 0 for prompt in choices.prompt_of_each]  # of streamed text

    def opening_events(self) -> Iterator[str]:
        for index, prompt in enumerate(self.choices.prompt_of_each):
            if self.body.echo and prompt:
                yield self._chunk(index, prompt, self._logprobs(self._echo(prompt)), None)

    def token_event(self, index: int, token: TokenEvent) -> str:
        logprobs = self._logprobs(self._generated([token]), self.offsets[index])
        self.offsets[index] += len(token.text)
        return self._chunk(index, token.text, logprobs, None)

    def finish_event(self, index: int, finished: Finished) -> str:
        return self._chunk(index, "", None, _finish_reason(finished))

    def closing_events(self, completion_tokens: int) -> Iterable[str]:
        if self.body.stream_options and self.body.stream_options.include_usage:
            yield p.sse_event(p.CompletionResponse(id=self.id, created=self.created, model=self.engine.name, choices=[],
                                                   usage=self._usage(completion_tokens)).model_dump())

    def response_body(self, results: list[tuple[list[TokenEvent], Finished]]) -> p.CompletionResponse:
        choices = []
        for index, (prompt, (tokens, finished)) in enumerate(zip(self.choices.prompt_of_each, results)):
            echoed = prompt if self.body.echo else ""
            logprobs = self._logprobs(self._echo(prompt) if self.body.echo else [])
            if logprobs is not None:  # the generated pieces' offsets count from the end of the echoed prompt
                _add(logprobs, self._generated(tokens), len(echoed))
            choices.append(p.CompletionChoice(index=index, text=echoed + finished.text, logprobs=logprobs,
                                              finish_reason=_finish_reason(finished)))
        return p.CompletionResponse(id=self.id, created=self.created, model=self.engine.name, choices=choices,
                                    usage=self._usage(sum(finished.completion_tokens for _, finished in results)))

    def _usage(self, completion_tokens: int) -> p.CompletionUsage:
        return p.CompletionUsage(prompt_tokens=self.prompt_tokens, completion_tokens=completion_tokens,
                                 total_tokens=self.prompt_tokens + completion_tokens)

    def _echo(self, prompt: str) -> list[Piece]:
        return [(piece.text, piece.data, logprob, None, len(piece.text))
                for piece, logprob in scored_pieces(self.engine, self.echoed[prompt], prompt)]

    def _generated(self, tokens: list[TokenEvent]) -> list[Piece]:
        return [(t.text, t.data, t.logprob, {alt.text: p.json_logprob(lp) for alt, lp in t.top or []}, len(t.text))
                for t in tokens]

    def _logprobs(self, pieces: list[Piece], offset: int = 0) -> p.CompletionLogprobs | None:
        """OpenAI's logprobs of these pieces, or None when the request did not ask for them."""
        if self.body.logprobs is None:
            return None
        logprobs = p.CompletionLogprobs()
        _add(logprobs, pieces, offset)
        return logprobs

    def _chunk(self, index: int, text: str, logprobs: p.CompletionLogprobs | None, finish: str | None) -> str:
        choice = p.CompletionChoice(index=index, text=text, logprobs=logprobs, finish_reason=finish)
        chunk = p.CompletionResponse(id=self.id, created=self.created, model=self.engine.name, choices=[choice])
        return p.sse_event(chunk.model_dump(exclude={"usage"}))


def _add(logprobs: p.CompletionLogprobs, pieces: list[Piece], offset: int) -> None:
    for text, data, logprob, top, length in pieces:
        logprobs.tokens.append(text)
        logprobs.token_bytes.append(list(data))
        logprobs.token_logprobs.append(logprob)
        logprobs.top_logprobs.append(top)
        logprobs.text_offset.append(offset)
        offset += length


def _finish_reason(finished: Finished) -> str:
    return "length" if finished.reason is FinishReason.LENGTH else "stop"  # OpenAI's: an end of text is a stop
