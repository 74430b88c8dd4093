"""/v1/generate: one prompt, one choice, in the project's own format."""

from __future__ import annotations

from typing import Any

from .. import protocol as p
from ..engine import Finished, ModelEngine, TokenEvent
from ..registry import ModelRegistry
from ..settings import Settings
from .generation import Choices, Generation, read_choices


async def generate(body: p.GenerateRequest, settings: Settings, registry: ModelRegistry,
                   notes: dict[str, Any]) -> Generate:
    choices = read_choices(body, settings, [body.prompt], body.stop, body.logprobs or None, stream=body.stream)
    engine = registry.get(body.model)  # after the checks of values: a bad value is a 400 whatever the model
    notes.update(model=engine.name, prompt=body.prompt)
    return Generate(engine, choices, settings.request_timeout_s, notes, with_tokens=body.logprobs > 0)


class Generate(Generation):
    def __init__(self, engine: ModelEngine, choices: Choices, timeout_s: float, notes: dict[str, Any],
                 with_tokens: bool):
        super().__init__(engine, choices, timeout_s, notes)
        (self.only,) = self.streams
        self.with_tokens = with_tokens

    def token_event(self, index: int, token: TokenEvent) -> str:
        shown = generated_token(token).model_dump(exclude_none=True) if self.with_tokens else {"id": token.id}
        return p.sse_event({"text": token.text, "token": shown})

    def finish_event(self, index: int, finished: Finished) -> str:
        return p.sse_event({"finish_reason": finished.reason.value, "text": finished.text, "seed": self.only.seed,
                            "usage": self._usage(finished).model_dump()})

    def response_body(self, results: list[tuple[list[TokenEvent], Finished]]) -> p.GenerateResponse:
        ((tokens, finished),) = results
        return p.GenerateResponse(
            id=self.only.id, model=self.engine.name, text=finished.text, seed=self.only.seed,
            finish_reason=finished.reason.value, usage=self._usage(finished),
            tokens=[generated_token(t) for t in tokens] if self.with_tokens else None)

    def _usage(self, finished: Finished) -> p.GenerateUsage:
        return p.GenerateUsage(prompt_tokens=self.prompt_tokens, completion_tokens=finished.completion_tokens)


def generated_token(token: TokenEvent) -> p.GeneratedToken:
    top = [p.Alternative(text=alt.text, bytes=list(alt.data), logprob=p.json_logprob(logprob))
           for alt, logprob in token.top or []]
    return p.GeneratedToken(id=token.id, text=token.text, bytes=list(token.data), logprob=token.logprob,
                            top=top or None)
