"""What comes next: the distribution over the next piece, or over the next whole word.

As docs/api.md defines it, a unit's probability (model.units says what a unit
is) is the product of the probabilities of *its* pieces (the tokenizer's own
spelling of the text, which is what the model was trained on) times the
probability that the piece after it starts a new unit, summed over the spaces
it may come after (" up", "up", "  up"). model.word_search finds the most
probable units; this module reads the prompt and steps the model for it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .network import LanguageModel, evaluating
from .prompt_cache import PromptCache
from .sampling import keep_only
from .tokenizer import Tokenizer
from .vocabulary import vocabulary_of
from .word_search import search_words


@dataclass(frozen=True)
class Prediction:
    unit: str  # "word" or "token"
    prompt_tokens: int
    distribution: list[tuple[str, float]]  # (text, probability), most probable first
    entropy: float  # nats, of the full next-piece distribution
    exact: bool = True  # False when the word search ran out of budget before `tolerance` held

    @property
    def coverage(self) -> float:
        return sum(p for _, p in self.distribution)


def next_piece_probs(logits: Tensor, temperature: float) -> Tensor:
    """softmax(logits / T) in float64; T = 0 puts all the mass on the argmax."""
    z = logits.double()
    if temperature == 0:
        return torch.nn.functional.one_hot(z.argmax(-1), z.shape[-1]).double()
    # Shift before dividing: at a tiny T, z / T overflows to inf and inf - inf is NaN.
    return torch.softmax((z - z.amax(-1, keepdim=True)) / temperature, dim=-1)


def entropy(probs: Tensor) -> float:
    return float(-(probs * probs.clamp_min(1e-300).log()).sum())


@torch.inference_mode()
def predict(
    model: LanguageModel,
    tokenizer: Tokenizer,
    prompt: str,
    top_k: int = 10,
    unit: str = "word",
    temperature: float = 1.0,
    prompts: PromptCache | None = None,
) -> Prediction:
    """The next-`unit` distribution after `prompt` (read as the start of a text).

    `prompts` reads the prompt through a cache of prefix states. Pieces that are
    no text on their own (a byte of a longer character) are never listed as
    tokens; their probability is part of the rest (`coverage` < 1). After a
    prompt that ends in a space, what comes next is what follows that space
    (Tokenizer.encode_prompt): a token is listed without it.
    """
    if unit not in ("word", "token"):
        raise ValueError(f"unit must be 'word' or 'token', got {unit!r}")
    with evaluating(model):
        ids, typed = tokenizer.encode_prompt(prompt)
        logits, state = prompts.prefill(ids) if prompts else model.read(model.tokens(ids))
        logits = keep_only(logits, tokenizer.pieces_beginning(typed)) if typed else logits
        # The searches keep their bookkeeping on the CPU: a distribution crosses once per model call.
        probs = next_piece_probs(logits[0], temperature).cpu()
        if unit == "token":
            listed = _top_pieces(tokenizer, probs, top_k, typed)
            return Prediction("token", len(ids) + bool(typed), listed, entropy(probs))
        step = _ModelStep(model, temperature)
        words, exact = search_words(probs, (state, 0), step, vocabulary_of(tokenizer), top_k)
        return Prediction("word", len(ids) + bool(typed), words, entropy(probs), exact)


def _top_pieces(tokenizer: Tokenizer, probs: Tensor, top_k: int, typed: str) -> list[tuple[str, float]]:
    """The most probable pieces that are text on their own (the prompt ends on a whole character, so a
    piece's text after it is its own), less the `typed` text they begin with; a piece that is only that
    text is not listed."""
    shown = torch.tensor([text is not None and text.startswith(typed) and text != typed
                          for text in tokenizer.piece_texts])
    values, index = probs.masked_fill(~shown, -1.0).topk(min(top_k, int(shown.sum())))
    return [(tokenizer.piece_texts[i][len(typed):], p) for p, i in zip(values.tolist(), index.tolist())]


class _ModelStep:
    """The search's `Step` on the model: a state is (a batch's state tensor, row), so rows are sliced out
    only when a child is expanded."""

    def __init__(self, model: LanguageModel, temperature: float):
        self.model, self.temperature = model, temperature

    def __call__(self, parents: list[tuple[Tensor, int]], pieces: list[int]) -> tuple[Tensor, list[tuple[Tensor, int]]]:
        model = self.model
        state = model.stack_rows([model.select_rows(s, slice(row, row + 1)) for s, row in parents])
        # The search's batches are its own (the same prompt makes the same rounds), so no blocks: one product.
        logits, state = model.step(model.tokens(pieces), state, invariant=False)
        next_probs = next_piece_probs(logits, self.temperature).cpu()
        return next_probs, [(state, row) for row in range(model.count_rows(state))]
