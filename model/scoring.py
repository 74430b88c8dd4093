"""The likelihood of a given text under a model, with the state carried through all of it.

Used by training's validation, `lyricist eval` and the service's scoring, so
that every figure is computed the same way: the text is encoded from the
start-of-text marker, and every piece of it is predicted from everything
before it, whatever the text's length (no evaluation batches, so no figure
depends on a batch size). The logits come from `LanguageModel.decode`, as
everywhere the service reads them.

The text is read in slices of at most `SLICE_TOKENS` pieces, each ONE call of
the fused kernel, and its log-probabilities are computed slice by slice, so
memory is bounded by the slice, never by the text. Any cut into calls of at
least 2 pieces reads the text as one pass does (model.network, `slice_end`),
and `decode`'s rows do not depend on their neighbours, so no figure depends on
the slice size. `read_score` is the same reading one slice per step (the
engine interleaves the slices of a long text with other work; beside running
streams each slice is as long as a step's time allows, model.steps `Pace`);
`score_text` runs it to its end.

`read_prefix` and `read_continuations` score several texts that share their
beginning (the alternatives for a part of a line): the shared pieces once,
then every text's own pieces side by side, a batch of rows a few positions at
a time. A text's figure is then the sum of both, as a score of it alone would
give up to the rounding of a batched product.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .memory import State
from .network import LanguageModel, evaluating, in_reading_order, slice_end
from .steps import Pace, Steps, run_to_end
from .tokenizer import Tokenizer
from .units import count_units

SLICE_TOKENS = 256  # the most pieces one call reads; memory and the engine's turns depend on it, no figure
# A slice's rows are decoded in blocks of this many (network.decode): the bits are the same whatever the slicing,
# and a block of 64 costs a third less per row than blocks of 8 (the generation steps' size) while padding a short
# text by at most 63 rows (on the AMD machine of docs/benchmarks.md, blocks of 8, 64 and 256 give the same bits).
SCORE_BLOCK_ROWS = 64


@dataclass
class Score:
    token_ids: list[int]  # the text's pieces (without the start marker)
    logprobs: torch.Tensor  # natural-log probability of each piece, float64
    chars: int
    words: int  # units as the API counts them (model.units), for word perplexity

    @property
    def nll(self) -> float:
        return -float(self.logprobs.sum())

    def metrics(self) -> dict[str, float | int]:
        nll, tokens = self.nll, len(self.token_ids)
        return {
            "nll": nll,
            "chars": self.chars,
            "tokens": tokens,
            "words": self.words,
            "nats_per_char": nll / self.chars if self.chars else 0.0,
            "bits_per_char": nll / self.chars / math.log(2) if self.chars else 0.0,
            "perplexity": _perplexity(nll / tokens) if tokens else 1.0,
            "word_perplexity": _perplexity(nll / self.words) if self.words else 1.0,
        }


def _perplexity(nats: float) -> float:
    """exp(nats), held at the largest float: one long unlikely word can pass 709 nats, and JSON has no inf."""
    return math.exp(min(nats, math.log(sys.float_info.max)))


def score_text(model: LanguageModel, tokenizer: Tokenizer, text: str, slice_tokens: int | None = None,
               observe: Callable[[torch.Tensor], None] | None = None) -> Score:
    """The likelihood of `text`, read in slices of at most `slice_tokens` pieces (SLICE_TOKENS)."""
    return run_to_end(read_score(model, tokenizer, text, slice_tokens, observe))


def read_score(model: LanguageModel, tokenizer: Tokenizer, text: str, slice_tokens: int | None = None,
               observe: Callable[[torch.Tensor], None] | None = None) -> Steps[Score]:
    """`score_text` one slice per step: each step reads one slice in one call and yields how many pieces it
    read; the generator returns the Score. `observe` is handed each slice's logits (the largest tensor a slice
    makes), for a look at the memory a score takes."""
    pace = Pace(slice_tokens or SLICE_TOKENS)
    device = model.device
    ids = in_reading_order(model.config, tokenizer.encode(text, add_bos=True))
    stream = torch.tensor(ids, device=device)
    # One block for the result, allocated first: small pieces kept between the slices' large short-lived
    # tensors would pin the heap above them (the process grew by hundreds of MB over a burst of long scores).
    logprobs = torch.empty(len(ids) - 1, dtype=torch.float64, device=device)
    state, start, seconds = None, 0, None
    while start < len(ids) - 1:
        end = slice_end(start, len(ids) - 1, pace.next(seconds))
        with torch.inference_mode(), evaluating(model):
            logits, state = model.read(stream[start:end], state, every_piece=True, block_rows=SCORE_BLOCK_ROWS)
            if observe is not None:
                observe(logits)
            logprobs[start:end] = -F.cross_entropy(logits.double(), stream[start + 1 : end + 1], reduction="none")
            del logits
        pace.read(end - start)
        seconds = yield end - start
        start = end
    return Score(ids[1:], logprobs.cpu(), len(text), count_units(text))


# The rows and positions one call of read_continuations reads: a step of at most 256 of a row's pieces stays
# short (about 30 ms where each row carries a full memory), and the schedule is fixed, so a figure never depends
# on the machine's speed.
CONTINUATION_ROWS = 32
CONTINUATION_POSITIONS = 8


def read_prefix(model: LanguageModel, ids: list[int], after: tuple[torch.Tensor, State] | None = None,
                slice_tokens: int | None = None) -> Steps[tuple[float, torch.Tensor, State]]:
    """The log probability of `ids`, the (1, vocab) logits after the last and the state after it; one slice per
    step, as `read_score` reads. From the start of a text (`after` None) `ids[0]` is the start marker, read but
    not predicted; `after`: the (logits, state) where an earlier read stopped, `ids` its continuation."""
    pace = Pace(slice_tokens or SLICE_TOKENS)
    stream = torch.tensor(ids, device=model.device)
    # each piece's log probability, summed at the end: the total's rounding does not depend on the slices
    logprobs = torch.zeros(len(ids), dtype=torch.float64, device=model.device)
    logits, state = None, None
    if after is not None:
        logits, state = after
        logprobs[0] = torch.log_softmax(logits.double(), -1)[0, ids[0]]
    start, seconds = 0, None
    while start < len(ids):
        end = slice_end(start, len(ids), pace.next(seconds))
        with torch.inference_mode(), evaluating(model):
            every, state = model.read(stream[start:end], state, every_piece=True, block_rows=SCORE_BLOCK_ROWS)
            targets = stream[start + 1 : end + 1]
            if len(targets):
                logprobs[start + 1 : end + 1] = -F.cross_entropy(every[: len(targets)].double(), targets,
                                                                 reduction="none")
            logits = every[-1:]
        pace.read(end - start)
        seconds = yield end - start
        start = end
    return float(logprobs.sum()), logits, state


def read_continuations(model: LanguageModel, logits: torch.Tensor, state: State, rows: list[list[int]]
                       ) -> Steps[list[float]]:
    """Each row's log probability: its pieces read after `state` (`logits` the (1, vocab) logits there). The
    rows run side by side, CONTINUATION_ROWS of them CONTINUATION_POSITIONS positions a call (a fixed schedule,
    so the bits of a row do not depend on the clock), a row leaving the batch once read; each step yields the
    pieces it read."""
    if any(not row for row in rows):
        raise ValueError("every continuation has at least one piece")
    first = torch.log_softmax(logits.double(), -1)[0]
    totals = [float(first[row[0]]) for row in rows]
    for group in range(0, len(rows), CONTINUATION_ROWS):
        found = yield from _read_side_by_side(model, state, rows[group:group + CONTINUATION_ROWS])
        for i, value in enumerate(found, group):
            totals[i] += value
    return totals


def _read_side_by_side(model: LanguageModel, state: State, rows: list[list[int]]) -> Steps[list[float]]:
    """The log probability of each row's pieces after its first (which `state`'s logits predict)."""
    device = model.device
    totals = [0.0] * len(rows)
    longest = max(len(row) for row in rows)
    padded = torch.zeros(len(rows), longest, dtype=torch.long)
    for i, row in enumerate(rows):
        padded[i, : len(row)] = torch.tensor(row)
    lengths = torch.tensor([len(row) for row in rows])
    active = torch.arange(len(rows))
    batch = model.repeat_rows(state.narrowed(longest), len(rows))
    position = 0  # the pieces before it are read; each row's piece at `position` is predicted, not yet read
    with torch.inference_mode(), evaluating(model):
        while True:
            keep = lengths[active] > position + 1  # rows with a piece left to predict after this one
            if not bool(keep.any()):
                break
            if not bool(keep.all()):
                active, batch = active[keep], model.select_rows(batch, keep.nonzero()[:, 0].to(device))
            end = min(position + CONTINUATION_POSITIONS, int(lengths[active].max()) - 1)
            inputs = padded[active, position:end].to(device)
            targets = padded[active, position + 1 : end + 1]
            step_logits, batch = model.read_rows(inputs, batch)
            logp = torch.log_softmax(step_logits.double(), -1).cpu().gather(-1, targets.unsqueeze(-1))[..., 0]
            valid = torch.arange(position + 1, end + 1).unsqueeze(0) < lengths[active].unsqueeze(1)
            for row, value in zip(active.tolist(), (logp * valid).sum(-1).tolist()):
                totals[row] += value
            yield int(valid.sum())
            position = end
    return totals
