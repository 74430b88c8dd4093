"""The running batch: one row per generation, the same order everywhere (sequences, state, logits, the pieces
each has seen). An LSTM's state is a fixed-size tensor per sequence, so joining and leaving are stacking and
selecting rows (the model's row methods)."""

from __future__ import annotations

import torch
from lyricist.model import LanguageModel, sample
from lyricist.model.memory import State
from lyricist.model.sampling import keep_only
from torch import Tensor

from .work import Sequence


class RunningBatch:
    def __init__(self, model: LanguageModel, vocab_size: int):
        self.model, self.vocab_size = model, vocab_size
        self.sequences: list[Sequence] = []
        self.state: State | None = None
        self.logits: Tensor | None = None  # each row's next-piece logits
        self.seen: Tensor | None = None  # (rows, vocab) bool: the pieces in each row's context (repetition penalty)

    def __len__(self) -> int:
        return len(self.sequences)

    def join(self, ready: list[Sequence]) -> None:
        """Add the rows of sequences whose prompts are read (their readings done)."""
        if not ready:
            return
        states, logits = [], []
        seen = torch.zeros(len(ready), self.vocab_size, dtype=torch.bool, device=self.model.device)
        for row, sequence in enumerate(ready):
            states.append(sequence.reading.state)
            first = sequence.reading.logits
            logits.append(first if sequence.first_pieces is None else keep_only(first, sequence.first_pieces))
            sequence.reading = None
            seen[row, sequence.prompt_ids] = True
            self.sequences.append(sequence)
        self.state = self.model.stack_rows(([self.state] if self.state is not None else []) + states)
        self.logits = torch.cat(([self.logits] if self.logits is not None else []) + logits)
        self.seen = torch.cat(([self.seen] if self.seen is not None else []) + [seen])

    def keep(self, rows: list[int]) -> None:
        """Keep only these rows, in this order."""
        self.sequences = [self.sequences[i] for i in rows]
        if not rows:
            self.state = self.logits = self.seen = None
            return
        self.state = self.model.select_rows(self.state, rows)
        self.logits = self.logits[rows]
        self.seen = self.seen[rows]

    def sample(self) -> Tensor:
        """One piece per row, each with its own settings and generator (model.sampling)."""
        params = [s.request.params for s in self.sequences]
        penalised = any(p.repetition_penalty != 1 for p in params)
        tokens = sample(self.logits, params, [s.generator for s in self.sequences], self.seen if penalised else None)
        self.seen[torch.arange(len(self.sequences), device=self.model.device), tokens] = True
        return tokens

    def logprobs(self) -> tuple[list[int], Tensor | None]:
        """The rows whose requests asked for logprobs, and their log-probabilities at this step."""
        wanted = [i for i, s in enumerate(self.sequences) if s.request.logprobs is not None]
        return wanted, torch.log_softmax(self.logits[wanted].float(), dim=-1) if wanted else None

    def advance(self, tokens: Tensor) -> None:
        """Every row reads its sampled piece: one batched model step."""
        # the batch owns its state; it writes, so the model's own distribution (LanguageModel.step)
        self.logits, self.state = self.model.step(tokens, self.state, in_place=True, mix_cache=False)
