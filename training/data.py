"""Corpus reading, the train/validation split, and batches for truncated BPTT."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor

from lyricist.model.units import lf_line_breaks

VALIDATION_FRACTION = 0.1  # the tiny shakespeare benchmark split, applied to every corpus


class CorpusError(ValueError):
    """A corpus that cannot be trained on; the message says why."""


@dataclass
class Corpus:
    """The text to learn from; without a separate validation text, its last 10% validates."""

    name: str
    text: str
    sha256: str
    validation: Corpus | None = None
    holdout_at: int | None = None  # where validation starts when not the plain 90% (fine-tuning: `holdout_split`)

    @property
    def split_at(self) -> int:
        if self.validation:
            return len(self.text)
        if self.holdout_at is not None:
            return self.holdout_at
        return int(len(self.text) * (1 - VALIDATION_FRACTION))

    @property
    def split_description(self) -> str:
        if self.validation:
            return (f"all of it for training; validation on {self.validation.name} "
                    f"({len(self.validation.text):,} characters)")
        if self.holdout_at is not None:
            return (f"first {self.holdout_at:,} characters for training, the last {len(self.text) - self.holdout_at:,} "
                    "(about 10%, from a song, verse or line boundary) for validation")
        return "first 90% of the characters for training, last 10% for validation"

    @property
    def train_text(self) -> str:
        return self.text[: self.split_at]

    @property
    def validation_text(self) -> str:
        return self.validation.text if self.validation else self.text[self.split_at :]


def read_corpus(path: str | Path) -> Corpus:
    """Any UTF-8 text file, its line breaks read as LF (a file saved on Windows trains as its LF copy does); a
    binary or empty file is refused with the reason. `sha256` is the file's own."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise CorpusError(f"cannot read corpus {path}: {error.strerror}") from None
    if not raw.strip():
        raise CorpusError(f"corpus {path} is empty")
    if b"\x00" in raw:
        raise CorpusError(f"corpus {path} looks binary (it contains NUL bytes); give a UTF-8 text file")
    try:
        text = lf_line_breaks(raw.decode("utf-8"))
    except UnicodeDecodeError as error:
        raise CorpusError(f"corpus {path} is not UTF-8 text (bad byte at offset {error.start})") from None
    name = path.parent.name if path.stem in ("input", "train") else path.stem  # data/NAME/input.txt -> NAME
    return Corpus(name, text, hashlib.sha256(raw).hexdigest())


def holdout_split(text: str, fraction: float = VALIDATION_FRACTION) -> int:
    """Where the last `fraction` of `text` starts, moved to the nearest boundary that is not too far.

    Tried in order: a song break (two or more blank lines), a verse break (a blank
    line), a line break; the first kind found within half the held-out size of the
    plain cut wins, the one nearest to it. Validation then starts at the boundary's
    next text, never inside a line. Without any, the plain cut.
    """
    target = int(len(text) * (1 - fraction))
    reach = max(1, int(len(text) * fraction / 2))
    low, high = max(1, target - reach), min(len(text) - 1, target + reach)
    for pattern in (r"\n{3,}", r"\n{2,}", r"\n+"):
        ends = [m.end() for m in re.finditer(pattern, text[low:high])]
        ends = [low + end for end in ends if low + end < len(text)]
        if ends:
            return min(ends, key=lambda end: abs(end - target))
    return target


class BatchStream:
    """A token stream laid out as `rows` parallel streams, cut into BPTT chunks.

    Position (epoch, offset) and the generator of chunk lengths are the whole
    state, so a resumed run continues with exactly the chunks it would have had.
    """

    def __init__(self, ids: list[int] | Callable[[int], list[int]], rows: int, bptt: int, variable: bool,
                 seed: int, shard: slice = slice(None)):
        """`ids`: the pieces, or a function giving each epoch's (an augmented text, new every epoch);
        `shard`: the rows this process trains on, of `rows` over all processes."""
        self.ids_of_epoch = ids if callable(ids) else None
        self.rows, self.shard = rows, shard
        self.bptt = bptt
        self.variable = variable
        self.generator = torch.Generator().manual_seed(seed)
        self.epoch = 0
        self.offset = 0
        self._lay_out(ids(0) if callable(ids) else ids)

    def _lay_out(self, ids: list[int]) -> None:
        columns = len(ids) // self.rows
        if columns < 2 * self.bptt:
            raise CorpusError(
                f"the training text is too small: {len(ids)} pieces, and a batch of {self.rows} rows "
                f"needs at least {self.rows * 2 * self.bptt} (2 chunks of bptt={self.bptt} per row)"
            )
        self.data = torch.tensor(ids[: self.rows * columns]).view(self.rows, columns)[self.shard]

    @property
    def steps_per_epoch(self) -> int:
        return (self.data.shape[1] - 1) // self.bptt

    @property
    def epoch_progress(self) -> float:
        return self.epoch + self.offset / (self.data.shape[1] - 1)

    def next_chunk(self) -> tuple[Tensor, Tensor, bool]:
        """(inputs, targets, starts_epoch): the next chunk of every row."""
        starts_epoch = self.offset == 0
        length = self._chunk_length()
        end = min(self.offset + length, self.data.shape[1] - 1)
        inputs = self.data[:, self.offset : end]
        targets = self.data[:, self.offset + 1 : end + 1]
        self.offset = end
        if self.offset >= self.data.shape[1] - 1:
            self.epoch += 1
            self.offset = 0
            if self.ids_of_epoch:
                self._lay_out(self.ids_of_epoch(self.epoch))
        return inputs, targets, starts_epoch

    def _chunk_length(self) -> int:
        if not self.variable:
            return self.bptt
        # AWD-LSTM: mostly the full length, sometimes half, jittered, so that
        # chunk boundaries fall at different places every epoch.
        base = self.bptt if torch.rand(1, generator=self.generator).item() < 0.95 else self.bptt / 2
        return max(5, int(base + 5 * torch.randn(1, generator=self.generator).item()))

    def state(self) -> dict:
        return {"epoch": self.epoch, "offset": self.offset}

    def restore(self, state: dict, generator_state: Tensor) -> None:
        if self.ids_of_epoch and state["epoch"] != self.epoch:
            self._lay_out(self.ids_of_epoch(state["epoch"]))
        self.epoch, self.offset = state["epoch"], state["offset"]
        self.generator.set_state(generator_state)
