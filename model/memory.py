"""The song's memory: what the model keeps of the text it has read besides its recurrent state (docs/memory.md).

An LSTM carries everything in a fixed-size state, and what a song sang twenty lines ago has faded from it by
the time the refrain comes back. Two mechanisms read the past directly instead, both over a window of the last
layer's recent outputs, kept per sequence in a ring buffer (`State.memory`):

- **Attention** (`model.attention`, trained with the model; Merity 2019, "Single Headed Attention RNN"): one
  head over the window, keys and values the layer-normed outputs with learned gates, no position embeddings,
  its output added to the last layer's. A query attends to the last `window` outputs, itself included.
- **The continuous cache** (`model.cache`, at inference only; Grave et al. 2017): the next-piece distribution
  mixed with one over the pieces that followed outputs like the present one in the window,
  p = (1 − λ) p_model + λ p_cache, p_cache(w) ∝ Σ_{i: x_{i+1} = w} exp(θ h_t · h_i). Where the closest output
  in the window is nearly the present one (cosine at least `match_cosine`: a line sung before, read again) the
  cache's share is `match_lam` instead. Its settings are tuned on a validation text and stored in the
  checkpoint; λ = 0 is off.

Attention needs no order among the window's slots (no position embeddings), so the ring buffer is written in
place of the oldest output, never shifted; each slot's position is known from the count of pieces read.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

NO_PIECE = -1  # a slot's next piece, while it is not known yet (the latest output, an empty slot)
QUERY_BLOCK = 16  # positions a product of the cache's (one shape for any cut: the same bits; docs/memory.md)


@dataclass(frozen=True)
class SharedSlots:
    """Remembered outputs that every row of a batch holds alike, kept once rather than in each row's ring: the
    text all the rows continue (`State.narrowed`). `memory` (slots, hidden), `next_pieces` (slots,) all known,
    `positions` (slots,) each slot's position; `base`: the first position the rows' own rings hold, at slot
    `position - base`, and every shared position comes before it; `window`: the whole ring's slots; `norms`
    (slots,) each slot's length, for the match cosines (they never change)."""

    memory: Tensor
    next_pieces: Tensor
    positions: Tensor
    base: int
    window: int
    norms: Tensor

    def map(self, fn: Callable[[Tensor], Tensor], floats_only: bool = False) -> SharedSlots:
        keep = (lambda t: t) if floats_only else fn
        return SharedSlots(fn(self.memory), keep(self.next_pieces), keep(self.positions), self.base, self.window,
                           keep(self.norms))


@dataclass(frozen=True)
class State:
    """A batch's state. `rnn`: (layers, parts, batch, hidden), h and c for an LSTM. With a memory: `memory`
    (batch, window, hidden), the last layer's latest outputs in a ring buffer; `next_pieces` (batch, window),
    the piece that followed each (NO_PIECE while unknown); `length` (batch,), the pieces read so far (slot of
    position p: p % window). With `shared` slots, the rings hold only the positions from `shared.base` on, at
    slot p - shared.base, and never wrap (a read that would wrap one makes the whole ring first: `with_room`)."""

    rnn: Tensor
    memory: Tensor | None = None
    next_pieces: Tensor | None = None
    length: Tensor | None = None
    shared: SharedSlots | None = None

    def map(self, fn: Callable[[Tensor], Tensor], floats_only: bool = False) -> State:
        """Every tensor through `fn` (`floats_only`: the float ones; the piece ids and lengths as they are)."""
        keep = (lambda t: t) if floats_only else fn
        if self.memory is None:
            return State(fn(self.rnn))
        shared = None if self.shared is None else self.shared.map(fn, floats_only)
        return State(fn(self.rnn), fn(self.memory), keep(self.next_pieces), keep(self.length), shared)

    def detached(self) -> State:
        """No gradient history, floats in float32 (training carries the state from one chunk to the next)."""
        return self.map(lambda t: t.detach()).map(lambda t: t.float(), floats_only=True)

    def to(self, device: torch.device | str) -> State:
        return self.map(lambda t: t.to(device))

    def rows(self, rows: Tensor | list[int] | slice) -> State:
        if self.memory is None:
            return State(self.rnn[:, :, rows])
        return State(self.rnn[:, :, rows], self.memory[rows], self.next_pieces[rows], self.length[rows],
                     self.shared)

    @property
    def own_length(self) -> Tensor:
        """(batch,): the positions each row's own ring has taken (all it has read, without shared slots)."""
        return self.length if self.shared is None else self.length - self.shared.base

    def narrowed(self, pieces: int) -> State:
        """The same state for rows that will read about `pieces` more pieces each, side by side: the memory's
        work and copies are per slot and per row, so each row's ring holds only the slots those pieces will fill.
        For one sequence whose text has filled more slots than the rows will, those slots are kept once for
        every row (`SharedSlots`), and each row's ring holds the text's last position and what comes next.
        Otherwise, where no ring will have wrapped by then, the ring is cut to the slots in use (the same bits
        as the whole ring; the shared slots give its figures to rounding). A read that would go past such a
        ring's end makes the whole ring first (`with_room`, in LanguageModel.features)."""
        if self.memory is None or self.shared is not None:
            return self
        window = self.memory.shape[1]
        used = int(self.length.max()) + pieces
        length = int(self.length[0])
        if self.count != 1 or length - 1 <= pieces + 1:
            if used >= window:
                return self
            return State(self.rnn, self.memory[:, :used], self.next_pieces[:, :used], self.length)
        positions = slot_positions(self.length, window)[0]
        kept = ((positions >= 0) & (positions < length - 1)).nonzero()[:, 0]
        kept = kept[positions[kept].argsort()]  # oldest first (any order reads alike)
        slots = self.memory[0, kept].clone()
        shared = SharedSlots(slots, self.next_pieces[0, kept].clone(), positions[kept], length - 1, window,
                             torch.linalg.vector_norm(slots.detach().float(), dim=1))
        last = (length - 1) % window
        own = min(pieces + 1, window)
        memory = F.pad(self.memory[:, last:last + 1], (0, 0, 0, own - 1))
        next_pieces = F.pad(self.next_pieces[:, last:last + 1], (0, own - 1), value=NO_PIECE)
        return State(self.rnn, memory, next_pieces, self.length, shared)

    def with_room(self, pieces: int, window: int) -> State:
        """The state ready to read `pieces` more pieces into a ring of `window` slots: a ring cut by `narrowed`
        that they would take past its end grows back to the whole ring first, so that no ring wraps at a cut."""
        if self.memory is None or (self.memory.shape[1] == window and self.shared is None):
            return self
        if int(self.own_length.max()) + pieces <= self.memory.shape[1]:
            return self
        return self.widened(window)

    def widened(self, window: int) -> State:
        """A ring cut by `narrowed` back to the whole ring of `window` slots, each position at its slot p % window,
        the slots nothing has filled empty."""
        if self.shared is None:  # a cut ring has not wrapped: its slots are where they were
            slots = self.memory.shape[1]
            return State(self.rnn, F.pad(self.memory, (0, 0, 0, window - slots)),
                         F.pad(self.next_pieces, (0, window - slots), value=NO_PIECE), self.length)
        rows, shared = self.count, self.shared
        memory = self.memory.new_zeros(rows, window, self.memory.shape[2])
        next_pieces = torch.full((rows, window), NO_PIECE, device=self.memory.device)
        # The shared positions lie within one window, and so does each row's own: the own, later, write over
        # the shared ones they have pushed out of the window.
        memory[:, shared.positions % window] = shared.memory
        next_pieces[:, shared.positions % window] = shared.next_pieces
        own = torch.arange(self.memory.shape[1], device=self.memory.device)
        row, slot = (own < self.own_length.unsqueeze(1)).nonzero(as_tuple=True)  # oldest first within each row
        memory[row, (shared.base + slot) % window] = self.memory[row, slot]
        next_pieces[row, (shared.base + slot) % window] = self.next_pieces[row, slot]
        return State(self.rnn, memory, next_pieces, self.length)

    @staticmethod
    def stack(states: list[State]) -> State:
        rnn = torch.cat([s.rnn for s in states], dim=2)
        if states[0].memory is None:
            return State(rnn)
        shared = states[0].shared
        if any(s.shared is not shared for s in states):  # rows of different texts: each with its whole ring
            states = [s if s.shared is None else s.widened(s.shared.window) for s in states]
            shared = None
        return State(rnn, torch.cat([s.memory for s in states]), torch.cat([s.next_pieces for s in states]),
                     torch.cat([s.length for s in states]), shared)

    @property
    def count(self) -> int:
        return self.rnn.shape[2]

    def tensors(self) -> dict[str, Tensor]:
        """Its tensors by name, to save with a checkpoint (training's carried state, which shares no slots)."""
        assert self.shared is None
        named = {"rnn": self.rnn, "memory": self.memory, "next_pieces": self.next_pieces, "length": self.length}
        return {name: t for name, t in named.items() if t is not None}

    @staticmethod
    def from_tensors(tensors: dict[str, Tensor]) -> State:
        return State(tensors["rnn"], tensors.get("memory"), tensors.get("next_pieces"), tensors.get("length"))


def empty_memory(batch: int, window: int, hidden: int, like: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    return (like.new_zeros(batch, window, hidden), torch.full((batch, window), NO_PIECE, device=like.device),
            torch.zeros(batch, dtype=torch.long, device=like.device))


def slot_positions(length: Tensor, window: int) -> Tensor:
    """(batch, window): the position each slot of the ring holds (negative: the slot is empty), given the
    pieces read so far. Slot s holds the latest position p < length with p % window == s."""
    slots = torch.arange(window, device=length.device)
    last = length.unsqueeze(1) - 1
    return last - (last - slots) % window


def remember(state: State, outputs: Tensor, pieces: Tensor) -> State:
    """The memory after reading `pieces` (batch, time), whose last-layer outputs are `outputs` (batch, time,
    hidden): each output written over the oldest slot, each slot's next piece filled in as it becomes known
    (the first piece read is the one that followed the latest output before it)."""
    memory, next_pieces, length = state.memory, state.next_pieces, state.length
    batch, window = memory.shape[0], memory.shape[1]
    time = outputs.shape[1]
    rows = torch.arange(batch, device=memory.device)
    next_pieces = next_pieces.clone()
    previous = (length - 1) % window
    had_one = length > 0
    next_pieces[rows[had_one], previous[had_one]] = pieces[had_one, 0]
    keep = min(time, window)  # a slice longer than the window leaves only its last `window` outputs
    positions = length.unsqueeze(1) + torch.arange(time - keep, time, device=memory.device)  # (batch, keep)
    slots = positions % window
    following = torch.cat([pieces[:, 1:], pieces.new_full((batch, 1), NO_PIECE)], dim=1)[:, time - keep:]
    memory = memory.clone()
    memory[rows.unsqueeze(1), slots] = outputs[:, time - keep:].to(memory.dtype)
    next_pieces[rows.unsqueeze(1), slots] = following
    return State(state.rnn, memory, next_pieces, length + time)


def window_mask(length: Tensor, ring: int, window: int, time: int) -> Tensor:
    """For queries at the `time` positions after `length` pieces, over the keys of a ring of `ring` slots then the
    chunk's own positions: the mask (batch, time, ring + time) of those within the query's window, the last
    `window` positions up to its own; empty slots never."""
    memory_positions = slot_positions(length, ring)
    chunk_positions = length.unsqueeze(1) + torch.arange(time, device=length.device)
    keys = torch.cat([memory_positions, chunk_positions], dim=1)
    queries = chunk_positions.unsqueeze(2)
    return (keys.unsqueeze(1) <= queries) & (keys.unsqueeze(1) > queries - window) & (keys.unsqueeze(1) >= 0)


class Attention(nn.Module):
    """One head over the window (SHA-RNN style): queries a linear map of the layer-normed output, keys and
    values the layer-normed outputs (what the memory keeps) scaled by learned sigmoid gates; the result added
    to the output. `chunk` attends a whole chunk at once (training); inference reads position by position over
    the ring (`read_ring`), so a text gives the same bits however it is cut into reads and steps."""

    def __init__(self, hidden: int, window: int):
        super().__init__()
        self.window = window
        self.norm = nn.LayerNorm(hidden)
        self.query = nn.Linear(hidden, hidden, bias=False)
        self.key_gate = nn.Parameter(torch.zeros(hidden))
        self.value_gate = nn.Parameter(torch.zeros(hidden))
        self.scale = hidden ** -0.5
        nn.init.normal_(self.query.weight, std=hidden ** -0.5)

    def chunk(self, outputs: Tensor, state: State) -> Tensor:
        """`outputs` (batch, time, hidden) of a chunk read after `state.length` pieces whose latest (normed)
        outputs are in `state.memory`: each position's output plus what it attends to."""
        time = outputs.shape[1]
        mask = window_mask(state.length, state.memory.shape[1], self.window, time)
        normed = torch.cat([state.memory.to(outputs.dtype), self.norm(outputs)], dim=1)
        queries = self.query(normed[:, -time:])
        keys = normed * torch.sigmoid(self.key_gate)
        values = normed * torch.sigmoid(self.value_gate)
        scores = torch.einsum("bth,bkh->btk", queries, keys) * self.scale
        scores = scores.masked_fill(~mask, float("-inf"))
        return outputs + torch.einsum("btk,bkh->bth", torch.softmax(scores, dim=-1), values)

    def one(self, output: Tensor, normed: Tensor, ring: Tensor, valid: Tensor,
            blocks: Callable[[Callable[[Tensor], Tensor], Tensor], Tensor]) -> Tensor:
        """One position of each row: `output` (rows, hidden), its normed form, the ring (rows, window, hidden)
        with it written in, `valid` (rows, window) the slots that hold an output."""
        query = blocks(self.query, normed)
        keys = ring * torch.sigmoid(self.key_gate)
        values = ring * torch.sigmoid(self.value_gate)
        scores = torch.einsum("rh,rwh->rw", query, keys) * self.scale
        weights = torch.softmax(scores.masked_fill(~valid, float("-inf")), dim=-1)
        return output + torch.einsum("rw,rwh->rh", weights, values)


@dataclass
class CacheConfig:
    """The continuous cache's settings (tuned on a validation text; λ = 0: off)."""

    window: int = 0  # past outputs looked back over (at most the memory's window)
    theta: float = 0.0  # the flatness of the match: exp(θ h_t · h_i)
    lam: float = 0.0  # the cache's share of the mixture
    match_cosine: float = 1.0  # a remembered output at least this close (cosine) to the present one: a match
    match_lam: float = 0.0  # the cache's share at a match (0: `lam` everywhere)

    def share(self, closeness: Tensor) -> Tensor:
        """The cache's share at each position, given the cosine of its closest remembered output."""
        if not self.match_lam:
            return torch.full_like(closeness, self.lam)
        return torch.where(closeness >= self.match_cosine, self.match_lam, self.lam).to(closeness.dtype)


class Recall:
    """What the continuous cache saw at each position of a read: per row and position, the weight of each ring
    slot (rows, time, window), the piece that followed it (rows, time, window) and the cosine of the closest
    remembered output (rows, time)."""

    def __init__(self, weights: Tensor, pieces: Tensor, closeness: Tensor):
        self.weights, self.pieces, self.closeness = weights, pieces, closeness

    def last(self) -> Recall:
        """What it saw at the last position only."""
        return Recall(self.weights[:, -1:], self.pieces[:, -1:], self.closeness[:, -1:])

    def mix(self, logits: Tensor, config: CacheConfig) -> Tensor:
        """log((1 − λ) softmax(logits) + λ p_cache) for logits (rows * time, vocab) in the reads' order; a
        position with nothing to recall keeps its distribution. p_cache is zero but at the pieces of the
        window's slots, so only those are mixed: the rest of the vocabulary is the model's share alone."""
        weights = self.weights.flatten(0, 1)
        pieces = self.pieces.flatten(0, 1).clamp_min(0)  # an unknown slot weighs 0: any piece will do
        vocab = logits.shape[1]
        # Rows as long as a multiple of 16 elements (the vocabulary and the slots padded): vectorised elementwise
        # work treats every row alike, so a row's bits do not depend on how many rows came with it (a cut of the
        # text into reads changes nothing).
        padded = F.pad(logits.float(), (0, -vocab % 16), value=float("-inf"))
        weights, pieces = F.pad(weights, (0, -weights.shape[1] % 16)), F.pad(pieces, (0, -pieces.shape[1] % 16))
        logp = torch.log_softmax(padded, dim=-1)
        recalled = weights.sum(dim=1, keepdim=True) > 0
        share = config.share(self.closeness.reshape(-1, 1).float())
        lam = torch.where(recalled, share, torch.zeros_like(share))
        cache = torch.zeros_like(logp).scatter_add_(1, pieces, weights).gather(1, pieces)  # each slot's piece's
        kept = logp + torch.log1p(-lam)  # 0 where nothing is recalled: the distribution as it was
        at_slots = torch.logaddexp(kept.gather(1, pieces), torch.log(cache.clamp_min(1e-45)) + torch.log(lam))
        return kept.scatter_(1, pieces, torch.where(recalled, at_slots, logp.gather(1, pieces)))[:, :vocab]


def read_ring(outputs: Tensor, pieces: Tensor, state: State, normalise: Callable[[Tensor], Tensor],
              attention: Attention | None, cache: CacheConfig | None,
              blocks: Callable[[Callable[[Tensor], Tensor], Tensor], Tensor],
              in_place: bool = False) -> tuple[Tensor, State, Recall | None]:
    """Inference over the ring: `outputs` (rows, time, hidden) of the last recurrent layer for `pieces` (rows,
    time) read after `state`. Returns the outputs with attention added, the state with the memory updated, and
    what the cache recalled at each position (None without a cache). Attention reads position by position; the
    cache's products go `QUERY_BLOCK` positions a product, each against the ring as it stood before its block
    and the block's own outputs, in products of one shape however the text is cut, so the bits do not depend on
    the cut. The rest of the cache's work (its weights, the match cosines) is done for all positions at once.
    `blocks` runs a row-wise product in fixed blocks of rows (the batch-invariant products)."""
    window = state.memory.shape[1]
    if outputs.shape[1] >= window:  # the positions of one part must not share a slot (_after_each)
        first = read_ring(outputs[:, :window - 1], pieces[:, :window - 1], state, normalise, attention, cache,
                          blocks, in_place)
        rest = read_ring(outputs[:, window - 1:], pieces[:, window - 1:], first[1], normalise, attention, cache,
                         blocks, in_place=True)
        recall = None if cache is None else Recall(*(torch.cat([a, b], dim=1) for a, b in zip(
            (first[2].weights, first[2].pieces, first[2].closeness), (rest[2].weights, rest[2].pieces,
                                                                       rest[2].closeness))))
        return torch.cat([first[0], rest[0]], dim=1), rest[1], recall
    matching = cache is not None and bool(cache.match_lam)
    # the slots' norms before this read writes any (in place, it writes over state.memory)
    slot_norms = torch.linalg.vector_norm(state.memory.detach().float(), dim=2) if matching else None
    ring, length = (state.memory if in_place else state.memory.clone()), state.own_length
    rows, time = outputs.shape[0], outputs.shape[1]
    index = torch.arange(rows, device=ring.device)
    steps = torch.arange(time, device=ring.device)
    slots = (length.unsqueeze(1) + steps) % window  # (rows, time): where each position is written
    tracked = torch.is_grad_enabled()  # dynamic evaluation differentiates through the ring: write a new one
    normed = normalise(outputs)
    written = normed.to(ring.dtype)
    positions = slot_positions(length, window) if attention is not None else None
    attended, products = [], []
    for begin in range(0, time, QUERY_BLOCK):
        block = slice(begin, begin + QUERY_BLOCK)
        if cache is not None:
            products.append(_block_products(normed[:, block], ring, written[:, block]))
        if attention is None:
            where = (index.unsqueeze(1), slots[:, block])
            ring = ring.index_put(where, written[:, block]) if tracked else ring.index_put_(where, written[:, block])
            continue
        for t in range(begin, min(begin + QUERY_BLOCK, time)):
            if tracked and t:
                ring = ring.clone()
            ring[index, slots[:, t]] = written[:, t]
            positions[index, slots[:, t]] = length + t
            within = (positions >= 0) & (positions > (length + t - attention.window).unsqueeze(1))
            attended.append(attention.one(outputs[:, t], normed[:, t], ring, within, blocks))
    # The piece that followed each slot, after each position: the piece read last before the slice learns its
    # next one first; each position then fills in the one before it, and is its own slot's latest output, its
    # next piece not known yet.
    following = state.next_pieces.clone()
    began = length > 0
    following[index[began], ((length - 1) % window)[began]] = pieces[began, 0]
    next_pieces = torch.cat([pieces[:, 1:], pieces.new_full((rows, 1), NO_PIECE)], dim=1)
    following_after = _after_each(following, slots, next_pieces, own=NO_PIECE)
    new_outputs = torch.stack(attended, dim=1) if attention is not None else outputs
    new_state = State(state.rnn, ring, following_after[:, -1].clone(), state.length + time, state.shared)
    if cache is None:
        return new_outputs, new_state, None
    every = _ring_products(torch.cat(products, dim=1)[:, :time], slots, window)  # (rows, time, window)
    known = following_after >= 0
    if cache.window < window:  # a slot holds one of the last `window` positions: all are in a wider window
        read_to = length.unsqueeze(1) + steps  # each position
        slot_at = _after_each(slot_positions(length, window), slots, read_to)
        known &= slot_at > (read_to - cache.window).unsqueeze(2)
    if state.shared is not None:  # the shared slots first, then the ring's
        shared = state.shared
        every = torch.cat([_shared_products(normed, shared.memory), every], dim=2)
        read_to = state.length.unsqueeze(1) + steps
        known = torch.cat([shared.positions > (read_to - cache.window).unsqueeze(2), known], dim=2)
        following_after = torch.cat([shared.next_pieces.expand(rows, time, -1), following_after], dim=2)
    unknown = ~known
    scores = (every * cache.theta).masked_fill(unknown, float("-inf"))
    weights = torch.softmax(scores, dim=-1).nan_to_num(0.0)  # nothing known: all -inf, NaN, 0
    if matching:
        written_norms = torch.linalg.vector_norm(written.detach().float(), dim=2)
        output_norms = torch.linalg.vector_norm(normed.detach().float(), dim=2, keepdim=True)
        slot_norms = _after_each(slot_norms, slots, written_norms)
        if state.shared is not None:
            slot_norms = torch.cat([state.shared.norms.expand(rows, time, -1), slot_norms], dim=2)
        norms = slot_norms * output_norms
        cosines = (every.detach() / norms.clamp_min(1e-12)).masked_fill(unknown, -1.0)
        closeness = cosines.max(dim=2).values
    else:
        closeness = every.new_full((rows, time), -1.0)
    return new_outputs, new_state, Recall(weights, following_after, closeness)


def _block_products(queries: Tensor, ring: Tensor, written: Tensor) -> Tensor:
    """(rows, QUERY_BLOCK, window + QUERY_BLOCK): the products of a block's queries (rows, ≤ QUERY_BLOCK,
    hidden) with the ring's slots as they stood before the block, then with the block's own outputs as the ring
    keeps them; padded to QUERY_BLOCK queries and outputs, so that every product has one shape."""
    padding = QUERY_BLOCK - queries.shape[1]
    queries = F.pad(queries.float(), (0, 0, 0, padding))
    own = F.pad(written.float(), (0, 0, 0, padding))
    return torch.cat([torch.bmm(queries, ring.float().transpose(1, 2)), torch.bmm(queries, own.transpose(1, 2))],
                     dim=2)


def _shared_products(queries: Tensor, shared: Tensor) -> Tensor:
    """(rows, time, slots): the products of queries (rows, time, hidden) with slots (slots, hidden) that every
    row holds alike, in products of `_block_products`' shape (a row's bits do not depend on its company)."""
    rows, time = queries.shape[0], queries.shape[1]
    keys = shared.float().t().expand(rows, -1, -1)  # no copy per row
    blocks = [torch.bmm(F.pad(queries[:, begin:begin + QUERY_BLOCK].float(),
                              (0, 0, 0, QUERY_BLOCK - min(QUERY_BLOCK, time - begin))), keys)
              for begin in range(0, time, QUERY_BLOCK)]
    return torch.cat(blocks, dim=1)[:, :time]


def _ring_products(block_products: Tensor, slots: Tensor, window: int) -> Tensor:
    """(rows, time, window): each position's products with the ring's slots as they stand after it, from the
    blocks' products: a slot that a position of the query's own block wrote, at or before the query, is that
    output's column; any other, the slot as it stood before the block."""
    rows, time = slots.shape
    query = torch.arange(time, device=slots.device).unsqueeze(1)
    writer = query - query % QUERY_BLOCK + torch.arange(QUERY_BLOCK, device=slots.device)  # (time, QUERY_BLOCK)
    at, writer = query.expand_as(writer)[writer <= query], writer[writer <= query]
    columns = torch.arange(window, device=slots.device).repeat(rows, time, 1)
    columns[torch.arange(rows, device=slots.device).unsqueeze(1), at, slots[:, writer]] = (
        window + writer % QUERY_BLOCK)
    return block_products.gather(2, columns)


def _after_each(before: Tensor, slots: Tensor, values: Tensor, own: int | None = None) -> Tensor:
    """(rows, time, window): `before` (rows, window) as it stands after each position t of a slice, position j
    having written values[:, j] at slots[:, j] (one slice's slots are distinct); `own`: what position t holds at
    its own slot instead, where that differs."""
    rows, time = slots.shape
    after = before.unsqueeze(1).repeat(1, time, 1)
    at, written = torch.tril_indices(time, time, device=before.device)  # each position t, and each j <= t
    chosen = values[:, written]
    if own is not None:
        chosen = torch.where(at == written, own, chosen)
    after[torch.arange(rows, device=before.device).unsqueeze(1), at, slots[:, written]] = chosen
    return after
