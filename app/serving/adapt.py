"""`"adapt": true` on /v1/score: dynamic evaluation (model/dynamic_eval.py) on a per-request copy of the weights.

An adapted score takes about nine times a plain one (a backward pass per segment) and holds a copy of the
weights with their gradients (about 50 MB for a shipped model), so each model runs one at a time, in a
thread of its own, at one torch thread: the engine's worker, and every other request, never wait for it, and
the worker's OpenMP team keeps the machine's other core (docs/serving.md, "Threads by the work at hand").
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import torch

from lyricist.model.dynamic_eval import DynamicEvaluator
from lyricist.model.scoring import Score

from ..engine import ModelEngine


class Adapters:
    """One evaluator per model, made at its first adapted score, and the lock that serialises them."""

    def __init__(self):
        self._by_model: dict[str, tuple[asyncio.Lock, DynamicEvaluator | None]] = {}

    async def score(self, engine: ModelEngine, text: str) -> Score:
        """The adapted score of `text`; ValueError when the model's checkpoint holds no gradient statistics."""
        lock, evaluator = self._by_model.setdefault(engine.name, (asyncio.Lock(), None))
        async with lock:
            if evaluator is None:
                evaluator = await asyncio.to_thread(_one_thread, DynamicEvaluator.from_checkpoint, engine.checkpoint)
                self._by_model[engine.name] = (lock, evaluator)
            gone = threading.Event()  # its awaiter has left (the client, or the request timeout): stop
            try:
                return await asyncio.to_thread(_one_thread, evaluator.score, text, gone.is_set)
            except asyncio.CancelledError:
                gone.set()  # the thread stops before its next segment
                raise


def _one_thread(fn: Callable[..., Any], *args: Any) -> Any:
    torch.set_num_threads(1)
    return fn(*args)
