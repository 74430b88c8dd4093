"""/v1/embeddings (OpenAI's Embeddings API) and /v1/neighbours: what the model relates (model/embeddings.py).

The texts of a request are read side by side on the model's engine as sliced work, like a score; a word's
neighbours come from the training words' vectors, built once per model off the event loop (a few seconds) and
kept."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

from lyricist.model.embeddings import WordSpace, text_vectors
from lyricist.model.words import read_words

from .. import limits
from .. import protocol as p
from ..engine import ModelEngine
from ..errors import APIError
from ..registry import ModelRegistry
from ..settings import Settings
from .deadline import within_deadline

_SPACES: dict[str, WordSpace] = {}
_SPACE_LOCK = asyncio.Lock()


async def embeddings(body: p.EmbeddingsRequest, settings: Settings, registry: ModelRegistry,
                     notes: dict[str, Any]) -> p.EmbeddingsResponse:
    limits.check(body, settings)
    engine = registry.get(body.model)
    size = engine.model.config.hidden_size
    if body.dimensions is not None and body.dimensions != size:
        raise APIError(400, f"dimensions: {engine.name}'s vectors have {size} dimensions, got {body.dimensions}",
                       "dimensions", "invalid_value")
    notes.update(model=engine.name)
    read = engine.read(lambda: text_vectors(engine.model, engine.tokenizer, body.inputs, engine.slice_tokens),
                       "embed")
    vectors = await within_deadline(read, settings)  # one deadline for the request
    data = [p.Embedding(index=index, embedding=(
                base64.b64encode(vector.numpy().astype("<f4").tobytes()).decode("ascii")
                if body.encoding_format == "base64" else vector.tolist()))
            for index, (vector, _) in enumerate(vectors)]
    pieces = sum(count for _, count in vectors)
    notes.update(prompt_tokens=pieces)
    return p.EmbeddingsResponse(data=data, model=engine.name,
                                usage=p.EmbeddingsUsage(prompt_tokens=pieces, total_tokens=pieces))


async def word_space(engine: ModelEngine) -> WordSpace:
    """The model's training words (model/words.py; for a checkpoint without them, the words its tokenizer
    writes in at most two pieces) and their vectors, built at the first request."""
    async with _SPACE_LOCK:
        space = _SPACES.get(engine.name)
        if space is None or space.model is not engine.model:
            space = await asyncio.to_thread(_build_space, engine)
            _SPACES[engine.name] = space
    return space


def _build_space(engine: ModelEngine) -> WordSpace:
    import torch

    from lyricist.songwriting.lines import common_words
    from lyricist.songwriting.tasks import lexicon

    torch.set_num_threads(1)  # one OpenMP team in the server: the workers' (docs/serving.md)
    words = read_words(engine.checkpoint.path)
    ordered = list(words) if words else sorted(common_words(engine.tokenizer, lexicon()))
    return WordSpace(engine.model, engine.tokenizer, ordered)


async def neighbours(body: p.NeighboursRequest, settings: Settings, registry: ModelRegistry,
                     notes: dict[str, Any]) -> p.NeighboursResponse:
    limits.check(body, settings)
    engine = registry.get(body.model)
    notes.update(model=engine.name)
    space = await within_deadline(word_space(engine), settings)
    found = await asyncio.to_thread(space.neighbours, body.word, body.n)
    return p.NeighboursResponse(model=engine.name, word=body.word,
                                neighbours=[p.Neighbour(word=w, similarity=s) for w, s in found])
