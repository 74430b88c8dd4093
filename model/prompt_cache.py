"""States after prompt prefixes, so a prompt that extends an earlier one reads only its new pieces.

Typing into the demo page asks for the next word after "Never gonna", then
"Never gonna g", "Never gonna gi", ...: each prompt extends the last. A prompt
is read in fixed chunks of `CHUNK` pieces and the state at every chunk
boundary is kept (least recently used first out). Because every prompt is
read by the same calls on the same inputs whether or not a prefix was
cached, no result depends on what happens to be in the cache.
"""

from __future__ import annotations

from array import array
from collections import OrderedDict

import torch
from torch import Tensor

from .network import Features, LanguageModel

CHUNK = 16  # pieces per call; a boundary every CHUNK pieces
CAPACITY = 2048  # states kept (8 KB each for a 2x512 LSTM)


class PromptCache:
    def __init__(self, model: LanguageModel, capacity: int = CAPACITY):
        self.model = model
        self.capacity = capacity
        self._states: OrderedDict[bytes, Tensor] = OrderedDict()
        self.hits = 0  # prompts that found a cached prefix

    @torch.inference_mode()
    def prefill(self, ids: list[int]) -> Features:
        """The model's features after reading `ids` (one sequence): those of the last chunk."""
        key = array("q", ids).tobytes()
        step = 8 * CHUNK  # bytes per chunk of ids
        last_boundary = (len(ids) - 1) // CHUNK * CHUNK  # the last chunk is never empty
        start, state = 0, None
        for boundary in range(last_boundary, 0, -CHUNK):
            state = self._states.get(key[: boundary // CHUNK * step])
            if state is not None:
                self._states.move_to_end(key[: boundary // CHUNK * step])
                start = boundary
                break
        self.hits += start > 0
        while True:
            end = min(start + CHUNK, len(ids))
            features = self.model.features(torch.tensor([ids[start:end]]), state)
            state = features.state
            if end == len(ids):
                return features
            self._remember(key[: end // CHUNK * step], state)
            start = end

    def _remember(self, key: bytes, state: Tensor) -> None:
        self._states[key] = state
        self._states.move_to_end(key)
        while len(self._states) > self.capacity:
            self._states.popitem(last=False)
