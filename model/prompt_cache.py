"""States after prompt prefixes, so a prompt that extends an earlier one reads only its new pieces.

Typing into the demo page asks for the next word after "Never gonna", then
"Never gonna g", "Never gonna gi", ...: each prompt extends the last. A prompt
is read in slices of at most `SLICE` pieces, each ONE call of the fused kernel,
and a slice stops at a multiple of `CHUNK` pieces where it can (the last one
before the prompt's end included), where the state is kept (least recently
used first out). Any cut of a text into calls of at least 2 pieces gives the
bits of one pass over it (model.network, `slice_end`), so no result depends on
what happens to be in the cache, on the slice size, or on how the engine
interleaves the slices with other work. The outcome at the last piece is kept
too, for the most recent prompts: the page asks about the same prompt again
when a control changes, and the kept outcome is the one that call would
compute again.

`reader(ids)` reads a prompt a slice at a time (the engine's chunked prefill);
`prefill(ids)` reads it all at once. Either gives the logits after the prompt's
last piece and the state after it, as `LanguageModel.read` would.
"""

from __future__ import annotations

from array import array
from collections import OrderedDict

import torch
from torch import Tensor

from .memory import State
from .network import MIN_CALL_PIECES, LanguageModel, slice_end
from .steps import Pace, Steps

CHUNK = 16  # the state is kept at multiples of CHUNK pieces
SLICE = 256  # the most pieces one call reads
CAPACITY = 2048  # states kept (8 KB each for a 2x512 LSTM)
WHOLE_CAPACITY = 256  # whole prompts' outcomes kept (24 KB each for a 2x512 LSTM of 4,000 pieces)
MEMORY_BUDGET = 128 * 2**20  # bytes of states kept of each kind: a state with a memory (model/memory.py) is far larger
_ID_BYTES = 8  # array("q")


class PromptCache:
    def __init__(self, model: LanguageModel, capacity: int = CAPACITY):
        self.model = model
        # States read for writing keep no ring where only the cache reads it (LanguageModel.keeps_memory): they
        # are kept apart from those read for reading, each kind within its own budget.
        self._states: dict[bool, _StateSlots] = {}  # by whether it keeps a memory: state at a chunk boundary
        self._whole_states: dict[bool, _StateSlots] = {}  # ... state after a whole prompt, by its ids
        self._whole_logits: dict[bool, _Slots] = {}  # ... and the logits after its last piece
        for memory in {model.config.keeps_memory(True), model.config.keeps_memory(False)}:
            state = model.initial_state(1, mix_cache=memory)
            state_bytes = sum(t.numel() * t.element_size() for t in state.tensors().values())
            fits = max(16, MEMORY_BUDGET // (2 * state_bytes))  # half the budget for each kind of state kept
            whole = min(WHOLE_CAPACITY, fits)
            self._states[memory] = _StateSlots(min(capacity, fits))
            self._whole_states[memory], self._whole_logits[memory] = _StateSlots(whole), _Slots(whole)
        self.hits = 0  # prompts that found a cached prefix
        self.whole_hits = 0  # prompts read before, answered from the cache alone

    def prefill(self, ids: list[int], slice_pieces: int = SLICE, mix_cache: bool = True) -> tuple[Tensor, State]:
        """The (1, vocab) logits after reading `ids` (one sequence) and the state after it."""
        reading = self.reader(ids, mix_cache)
        while not reading.done:
            reading.read(slice_pieces)
        return reading.logits, reading.state

    def keep(self, ids: list[int], state: State) -> None:
        """Keep `state`, read elsewhere after `ids` with the cache mixed in, for the prompts that extend them
        (at a CHUNK boundary, where a reader looks; elsewhere nothing is kept)."""
        if ids and len(ids) % CHUNK == 0:
            self._states[self.model.config.keeps_memory(True)].put(array("q", ids).tobytes(), state)

    def reader(self, ids: list[int], mix_cache: bool = True) -> PromptReading:
        """`ids` to be read a slice at a time (`PromptReading.read`); done at once when cached whole.
        `mix_cache` False: the logits without the continuous cache, for writing (`LanguageModel.step`)."""
        return PromptReading(self, ids, mix_cache)


class PromptReading:
    """One prompt being read: `read(limit)` reads one slice (one call); once `done`, `logits` (1, vocab) after
    its last piece and `state` after it."""

    def __init__(self, cache: PromptCache, ids: list[int], mix_cache: bool = True):
        if not ids:
            raise ValueError("a prompt has at least its start marker")
        self.cache, self.ids, self.mix_cache = cache, ids, mix_cache
        memory = cache.model.config.keeps_memory(mix_cache)
        self._states, self._whole_states = cache._states[memory], cache._whole_states[memory]
        self._whole_logits = cache._whole_logits[memory]
        self.key = array("q", ids).tobytes()
        self.whole_key = self.key if mix_cache else b"w" + self.key  # the states may agree; the logits may not
        self.logits: Tensor | None = None
        self.position, self.state = 0, None
        state = self._whole_states.get(self.whole_key)
        if state is not None:
            cache.whole_hits += 1
            self.logits = self._whole_logits.get(self.whole_key).clone()
            self.state = state.map(torch.clone)  # a copy: a slot is reused once evicted
            self.position = len(ids)
            return
        # The latest kept boundary that leaves at least a call's worth of pieces to read.
        for boundary in range((len(ids) - MIN_CALL_PIECES) // CHUNK * CHUNK, 0, -CHUNK):
            state = self._states.get(self.key[: boundary * _ID_BYTES])
            if state is not None:
                self.position, self.state = boundary, state.map(torch.clone)
                cache.hits += 1
                break
        # The last boundary before the end, where a prompt typed further will pick up.
        last = (len(ids) - MIN_CALL_PIECES) // CHUNK * CHUNK
        self._last_boundary = last if last > self.position + MIN_CALL_PIECES - 1 else None

    @property
    def done(self) -> bool:
        return self.logits is not None

    @property
    def remaining(self) -> int:
        return len(self.ids) - self.position

    def steps(self, most: int = SLICE) -> Steps[None]:
        """Read to the end, a slice per step (as long as the engine's time for it allows: model.steps)."""
        pace, seconds = Pace(most), None
        while not self.done:
            pieces = self.read(pace.next(seconds))
            pace.read(pieces)
            seconds = yield pieces

    @torch.inference_mode()
    def read(self, limit: int = SLICE) -> int:
        """Read one slice of at most about `limit` pieces in one call; how many pieces it read."""
        if self.done:
            return 0
        ids, start = self.ids, self.position
        end = len(ids)
        if self._last_boundary is not None and start < self._last_boundary:
            end = self._last_boundary
        end = slice_end(start, end, limit, CHUNK)
        model = self.cache.model
        logits, self.state = model.read(model.tokens(ids[start:end]), self.state, mix_cache=self.mix_cache)
        self.position = end
        if end == len(ids):
            self._whole_states.put(self.whole_key, self.state)
            self._whole_logits.put(self.whole_key, logits)
            self.logits = logits
        elif end % CHUNK == 0:
            self._states.put(self.key[: end * _ID_BYTES], self.state)
        return end - start


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


class _StateSlots:
    """_Slots for a model State: a block per tensor of it."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self._fields: dict[str, _Slots] = {}

    def __len__(self) -> int:
        return len(next(iter(self._fields.values()))) if self._fields else 0

    def get(self, key: bytes) -> State | None:
        found = {name: slots.get(key) for name, slots in self._fields.items()}
        if not found or any(t is None for t in found.values()):
            return None
        return State.from_tensors(found)

    def put(self, key: bytes, state: State) -> None:
        for name, tensor in state.tensors().items():
            self._fields.setdefault(name, _Slots(self.capacity)).put(key, tensor)
