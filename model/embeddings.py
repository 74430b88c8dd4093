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

from .network import MIN_CALL_PIECES, LanguageModel, evaluating, slice_end
from .steps import Pace, Steps
from .tokenizer import Tokenizer

NEIGHBOUR_WORDS = 10_000  # the most frequent training words a word's neighbours are drawn from


SUM_BLOCK = 32  # pieces whose outputs are summed together, then the sums in order: no bit depends on the slices
# The fused kernel gives a row the same bits in any batch of 2 rows or more, whatever the other rows hold and
# wherever the row stands, and for any cut of its reading into calls of 2 pieces or more; a lone row takes another
# path (a GEMV) and other bits in the last places. So the rows of several texts are never fewer than this (copies
# of the one left fill in); a lone text is read alone, as scoring reads it: beside a copy it would take twice
# the time (docs/api.md).
MIN_ROWS = 2


@torch.inference_mode()
def text_vectors(model: LanguageModel, tokenizer: Tokenizer, texts: list[str], slice_pieces: int = 256
                 ) -> Steps[list[tuple[Tensor, int]]]:
    """Each text's unit vector and its count of pieces, a call per step (model.steps), the texts side by side: a
    text's vector has the same bits beside any other texts (MIN_ROWS; a text read alone differs from them in the
    last places). A row leaves the batch once its text has ended; a call that runs past a shorter text's end
    reads filler there, whose outputs are dropped. The outputs do not depend on the continuous cache, which only
    mixes the next-piece distribution: it is left out of the reading."""
    encoded = [tokenizer.encode(text, add_bos=True) for text in texts]
    lengths = [len(ids) for ids in encoded]
    span = max(max(lengths), MIN_CALL_PIECES)  # a text of the start marker alone is read with filler after it
    tokens = torch.zeros(len(texts), span, dtype=torch.long)
    for row, ids in enumerate(encoded):
        tokens[row, :len(ids)] = torch.tensor(ids)
    tokens = tokens.to(model.device)
    totals = [torch.zeros(model.config.hidden_size, dtype=torch.float64, device=model.device) for _ in texts]
    blocks: list[list[Tensor]] = [[] for _ in texts]  # each text's outputs of the block being gathered
    vectors: list[Tensor | None] = [None] * len(texts)
    least = MIN_ROWS if len(texts) > 1 else 1
    rows, state, start, seconds = _batch_rows(range(len(texts)), least), None, 0, None
    pace = Pace(slice_pieces)  # pieces a call, all its rows together: memory is bounded by the slice
    with evaluating(model):
        while start < span:
            end = slice_end(start, span, max(MIN_CALL_PIECES, pace.next(seconds) // len(rows)))
            features = model.features(tokens[rows, start:end], state, mix_cache=False)
            read = 0
            for position, row in enumerate(rows):
                if row in rows[:position]:  # a copy, there to keep the rows at MIN_ROWS
                    continue
                outputs = features.hidden[position, :min(end, lengths[row]) - start].double()
                read += len(outputs)
                if lengths[row] == 1:  # an empty text: what the model makes of a text's start
                    vectors[row] = outputs[0]
                blocks[row].extend(outputs[1:] if start == 0 else outputs)  # the start marker is no piece
                while len(blocks[row]) >= SUM_BLOCK:
                    totals[row] += torch.stack(blocks[row][:SUM_BLOCK]).sum(dim=0)
                    del blocks[row][:SUM_BLOCK]
            pace.read(len(rows) * (end - start))
            seconds = yield read
            start = end
            going = _batch_rows([row for row in dict.fromkeys(rows) if lengths[row] > start], least)
            state = features.state if going == rows else model.select_rows(
                features.state, [rows.index(row) for row in going])
            rows = going
    for row, block in enumerate(blocks):
        if block:
            totals[row] += torch.stack(block).sum(dim=0)
        if lengths[row] > 1:
            vectors[row] = totals[row] / (lengths[row] - 1)
    return [(torch.nn.functional.normalize(vector.float(), dim=0).cpu(), length - 1)
            for vector, length in zip(vectors, lengths)]


def _batch_rows(rows, least: int) -> list[int]:
    """The rows of the next call: those given, the first repeated up to `least`."""
    rows = list(rows)
    return rows + rows[:1] * (least - len(rows)) if rows else []


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
