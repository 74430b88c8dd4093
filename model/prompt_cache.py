"""States after prompt prefixes, so a prompt that extends an earlier one reads only its new pieces.

Typing into the demo page asks for the next word after "Never gonna", then
"Never gonna g", "Never gonna gi", ...: each prompt extends the last. A prompt
is read in fixed chunks of `CHUNK` pieces and the state at every chunk
boundary is kept (least recently used first out). Because every prompt is
read by the same calls on the same inputs whether or not a prefix was
cached, no result depends on what happens to be in the cache. The outcome at
the last piece is kept too, for the most recent prompts: the page asks about
the same prompt again when a control changes, and the kept outcome is the one
that call would compute again.
"""

from __future__ import annotations

from array import array
from collections import OrderedDict

import torch
from torch import Tensor

from .network import Features, LanguageModel

CHUNK = 16  # pieces per call; a boundary every CHUNK pieces
CAPACITY = 2048  # states kept (8 KB each for a 2x512 LSTM)
WHOLE_CAPACITY = 256  # whole prompts' outcomes kept (10 KB each for a 2x512 LSTM)


class PromptCache:
    def __init__(self, model: LanguageModel, capacity: int = CAPACITY):
        self.model = model
        self._states = _Slots(capacity)  # state at a chunk boundary, by the ids before it
        self._whole_states = _Slots(WHOLE_CAPACITY)  # state after a whole prompt, by its ids
        self._whole_outputs = _Slots(WHOLE_CAPACITY)  # the model's output at its last piece
        self.hits = 0  # prompts that found a cached prefix
        self.whole_hits = 0  # prompts read before, answered from the cache alone

    @torch.inference_mode()
    def prefill(self, ids: list[int]) -> Features:
        """The model's features after reading `ids` (one sequence), at its last piece."""
        key = array("q", ids).tobytes()
        state = self._whole_states.get(key)
        if state is not None:
            self.whole_hits += 1
            output = self._whole_outputs.get(key).clone()
            return Features(output, output, state.clone())  # copies: a slot is reused once evicted
        step = 8 * CHUNK  # bytes per chunk of ids
        last_boundary = (len(ids) - 1) // CHUNK * CHUNK  # the last chunk is never empty
        start, state = 0, None
        for boundary in range(last_boundary, 0, -CHUNK):
            state = self._states.get(key[: boundary // CHUNK * step])
            if state is not None:
                start = boundary
                break
        self.hits += start > 0
        while True:
            end = min(start + CHUNK, len(ids))
            features = self.model.features(torch.tensor([ids[start:end]]), state)
            state = features.state
            if end == len(ids):
                last = features.dropped[:, -1:]
                self._whole_states.put(key, state)
                self._whole_outputs.put(key, last)
                return Features(features.hidden[:, -1:], last, state)
            self._states.put(key[: end // CHUNK * step], state)
            start = end


class _Slots:
    """A least-recently-used map from keys to same-shaped tensors, held in one block of memory.

    Thousands of small tensors kept for long among the large short-lived ones of
    the model's calls fragment the heap: the process grew by 1.7 MB a prompt in a
    predict benchmark. One block, allocated once, keeps it flat. `get` returns a
    view into the block, valid until the next `put`."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self._slot_of: OrderedDict[bytes, int] = OrderedDict()
        self._block: Tensor | None = None

    def __len__(self) -> int:
        return len(self._slot_of)

    def get(self, key: bytes) -> Tensor | None:
        slot = self._slot_of.get(key)
        if slot is None:
            return None
        self._slot_of.move_to_end(key)
        return self._block[slot]

    def put(self, key: bytes, value: Tensor) -> None:
        if self._block is None:
            self._block = value.new_empty((self.capacity, *value.shape))
        slot = self._slot_of.get(key)
        if slot is None:
            slot = len(self._slot_of) if len(self._slot_of) < self.capacity else self._slot_of.popitem(last=False)[1]
            self._slot_of[key] = slot
        self._slot_of.move_to_end(key)
        self._block[slot].copy_(value)
