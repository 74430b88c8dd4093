"""/v1/score: the likelihood of a given text."""

from __future__ import annotations

from typing import Any

from lyricist.model.scoring import Score
from lyricist.model.tokenizer import TokenText

from .. import limits
from .. import protocol as p
from ..engine import ModelEngine
from ..errors import APIError
from ..registry import ModelRegistry
from ..settings import Settings
from .adapt import Adapters
from .deadline import within_deadline


async def score(body: p.ScoreRequest, settings: Settings, registry: ModelRegistry, adapters: Adapters,
                notes: dict[str, Any]) -> p.ScoreResponse:
    limits.check(body, settings)
    engine = registry.get(body.model)
    notes.update(model=engine.name, prompt=body.text)
    if body.adapt:
        try:
            scored = await within_deadline(adapters.score(engine, body.text), settings)
        except ValueError as error:
            raise APIError(422, f"adapt: {error}", param="adapt") from None
    else:
        scored = await within_deadline(engine.score(body.text), settings)
    figures = scored.metrics()
    notes.update(prompt_tokens=figures["tokens"])
    return p.ScoreResponse(
        model=engine.name, tokens=figures["tokens"], chars=figures["chars"], nll=figures["nll"],
        nats_per_char=figures["nats_per_char"] if body.text else None,
        perplexity=figures["perplexity"] if scored.token_ids else None,
        evaluation="dynamic" if body.adapt else "static",
        token_logprobs=[p.TokenLogprob(text=piece.text, bytes=list(piece.data), logprob=logprob)
                        for piece, logprob in scored_pieces(engine, scored, body.text)])


def scored_pieces(engine: ModelEngine, scored: Score, text: str) -> list[tuple[TokenText, float]]:
    """Each piece of the scored `text` as a token (its own characters), and its logprob: /v1/score's tokens, and a
    completion's echo."""
    return list(zip(engine.tokenizer.token_texts(scored.token_ids, text), scored.logprobs.tolist()))
