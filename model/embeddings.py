"""What the model relates: a vector for a text and one for a word, in the model's own space (docs/api.md,
`/v1/embeddings` and `/v1/neighbours`).

- A **text's vector** is the mean, over the text's pieces, of the model's output at each piece (the last
  layer's output that the decoder reads: what the model has made of the text up to there), read from the start
  of a text as scoring reads it, then scaled to unit length. Two texts the model reads alike point alike.
- A **word's vector** is the mean of the input embeddings of its pieces as the tokenizer spells it after a
  space (" sorrow"), scaled to unit length: the embedding is tied to the decoder, so it is both how the model
  reads the word and how it predicts it. A word's neighbours are the training words (model/words.py) whose
  vectors are nearest by cosine similarity.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .network import LanguageModel, evaluating, slice_end
from .steps import Pace, Steps
from .tokenizer import Tokenizer

NEIGHBOUR_WORDS = 10_000  # the most frequent training words a word's neighbours are drawn from


SUM_BLOCK = 32  # pieces whose outputs are summed together, then the sums in order: no bit depends on the slices


@torch.inference_mode()
def text_vector(model: LanguageModel, tokenizer: Tokenizer, text: str, slice_pieces: int = 256
                ) -> Steps[tuple[Tensor, int]]:
    """A text's unit vector and its count of pieces, a slice per step (model.steps). The outputs do not depend on
    the continuous cache, which only mixes the next-piece distribution: it is left out of the reading."""
    ids = model.tokens(tokenizer.encode(text, add_bos=True))
    total = torch.zeros(model.config.hidden_size, dtype=torch.float64, device=model.device)
    block: list[Tensor] = []  # the outputs of the block being gathered
    state, start, last, seconds = None, 0, None, None
    pace = Pace(slice_pieces)
    with evaluating(model):
        while start < len(ids):
            end = slice_end(start, len(ids), pace.next(seconds))
            features = model.features(ids[start:end].view(1, -1), state, mix_cache=False)
            state = features.state
            outputs = features.hidden[0].double()
            last = outputs[-1]
            block.extend(outputs[1:] if start == 0 else outputs)  # the start marker is no piece
            while len(block) >= SUM_BLOCK:
                total += torch.stack(block[:SUM_BLOCK]).sum(dim=0)
                del block[:SUM_BLOCK]
            pace.read(end - start)
            seconds = yield end - start
            start = end
    if block:
        total += torch.stack(block).sum(dim=0)
    pieces = len(ids) - 1
    vector = total / pieces if pieces else last  # an empty text: what the model makes of a text's start
    return torch.nn.functional.normalize(vector.float(), dim=0).cpu(), pieces


def word_vector(model: LanguageModel, tokenizer: Tokenizer, word: str) -> Tensor:
    pieces = tokenizer.encode(" " + word)
    vectors = model.embedding.weight.detach()[model.tokens(pieces)]
    return torch.nn.functional.normalize(vectors.mean(dim=0).float(), dim=0).cpu()


class WordSpace:
    """The training words' vectors, built once per model: a word's nearest neighbours among them."""

    def __init__(self, model: LanguageModel, tokenizer: Tokenizer, words: list[str]):
        self.model, self.tokenizer = model, tokenizer
        self.words = words[:NEIGHBOUR_WORDS]
        with torch.inference_mode():
            self.vectors = torch.stack([word_vector(model, tokenizer, w) for w in self.words]) if self.words else None

    def neighbours(self, word: str, n: int) -> list[tuple[str, float]]:
        """The `n` training words nearest to `word` (cosine similarity of word vectors), `word` itself and its
        other cases left out."""
        if self.vectors is None:
            return []
        itself = word.lower()  # the training words are lower-case: so is the word they are compared with
        with torch.inference_mode():
            similarity = self.vectors @ word_vector(self.model, self.tokenizer, itself)
        order = similarity.argsort(descending=True, stable=True).tolist()
        found = [(self.words[i], float(similarity[i])) for i in order if self.words[i].lower() != itself]
        return found[:n]
