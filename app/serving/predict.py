"""/v1/predict: the next-word (or next-piece) distribution."""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Any

from lyricist.model.prediction import Prediction

from .. import limits
from .. import protocol as p
from ..registry import ModelRegistry
from ..settings import Settings
from .deadline import within_deadline
from .songwriting import check_constraints, predict_constrained


# Answers kept, by model, prompt and settings: a prediction is exact and the weights never change, and a
# writer's page asks again for what it showed (a filter cleared, a word taken back).
PREDICTIONS_KEPT = 256


class KeptPredictions:
    """The last PREDICTIONS_KEPT answers, least recently used out; used on the event loop only."""

    def __init__(self, capacity: int = PREDICTIONS_KEPT):
        self.capacity = capacity
        self._answers: OrderedDict[tuple, Prediction] = OrderedDict()

    def get(self, key: tuple) -> Prediction | None:
        answer = self._answers.get(key)
        if answer is not None:
            self._answers.move_to_end(key)
        return answer

    def put(self, key: tuple, answer: Prediction) -> None:
        self._answers[key] = answer
        if len(self._answers) > self.capacity:
            self._answers.popitem(last=False)


async def predict(body: p.PredictRequest, settings: Settings, registry: ModelRegistry, kept: KeptPredictions,
                  notes: dict[str, Any]) -> p.PredictResponse:
    limits.check(body, settings)
    check_constraints(body)
    engine = registry.get(body.model)  # after the checks of values: a bad value is a 400 whatever the model
    notes.update(model=engine.name, prompt=body.prompt)
    if body.constrained:  # rhymes_with / syllables: the exact distribution over the qualifying words
        return await predict_constrained(body, engine, settings, notes)
    key = (engine.name, body.prompt, body.top_k, body.unit, body.temperature)
    result = kept.get(key)
    if result is None:
        result = await within_deadline(engine.predict(body.prompt, body.top_k, body.unit, body.temperature), settings)
        kept.put(key, result)
    else:
        engine.watch_loop()  # a kept answer never reaches the engine, and a stream of them is load too
    notes.update(prompt_tokens=result.prompt_tokens)
    return p.PredictResponse(
        model=engine.name, unit=result.unit, prompt_tokens=result.prompt_tokens, coverage=result.coverage,
        entropy=result.entropy, exact=result.exact,
        distribution=[p.Candidate(text=text, prob=prob,
                                  logprob=p.json_logprob(math.log(prob) if prob > 0 else -math.inf))
                      for text, prob in result.distribution])
