"""/v1/predict: the next-word (or next-piece) distribution."""

from __future__ import annotations

import math
from typing import Any

from .. import limits
from .. import protocol as p
from ..registry import ModelRegistry
from ..settings import Settings
from .songwriting import check_constraints, predict_constrained


async def predict(body: p.PredictRequest, settings: Settings, registry: ModelRegistry,
                  notes: dict[str, Any]) -> p.PredictResponse:
    limits.check(body, settings)
    check_constraints(body)
    engine = registry.get(body.model)  # after the checks of values: a bad value is a 400 whatever the model
    notes.update(model=engine.name, prompt=body.prompt)
    if body.constrained:  # rhymes_with / syllables: the exact distribution over the qualifying words
        return await predict_constrained(body, engine, settings, notes)
    result = await engine.predict(body.prompt, body.top_k, body.unit, body.temperature)
    notes.update(prompt_tokens=result.prompt_tokens)
    return p.PredictResponse(
        model=engine.name, unit=result.unit, prompt_tokens=result.prompt_tokens, coverage=result.coverage,
        entropy=result.entropy, exact=result.exact,
        distribution=[p.Candidate(text=text, prob=prob,
                                  logprob=p.json_logprob(math.log(prob) if prob > 0 else -math.inf))
                      for text, prob in result.distribution])
