"""The likelihood of a given text under a model, with the state carried through all of it.

Used by training's validation, `lyricist eval` and the service's scoring, so
that every figure is computed the same way: the text is encoded from the
start-of-text marker, and every piece of it is predicted from everything
before it, whatever the text's length (no evaluation batches, so no figure
depends on a batch size). The logits come from `LanguageModel.decode`, as
everywhere the service reads them.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .network import LanguageModel, evaluating
from .tokenizer import Tokenizer
from .units import count_units

CHUNK_TOKENS = 1024  # pieces per forward call; only memory depends on it


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


@torch.inference_mode()
def score_text(model: LanguageModel, tokenizer: Tokenizer, text: str) -> Score:
    device = model.embedding.weight.device
    ids = tokenizer.encode(text, add_bos=True)
    stream = torch.tensor(ids, device=device).unsqueeze(0)
    logprobs, state = [], None
    with evaluating(model):
        for start in range(0, stream.shape[1] - 1, CHUNK_TOKENS):
            inputs = stream[:, start : start + CHUNK_TOKENS]
            targets = stream[:, start + 1 : start + 1 + CHUNK_TOKENS]
            features = model.features(inputs[:, : targets.shape[1]], state)
            state = features.state
            logits = model.decode(features.dropped[0])
            logprobs.append(-F.cross_entropy(logits.double(), targets[0], reduction="none"))
    scores = torch.cat(logprobs).cpu() if logprobs else torch.zeros(0, dtype=torch.float64)
    return Score(ids[1:], scores, len(text), count_units(text))
