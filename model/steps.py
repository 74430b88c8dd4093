"""Sliced work: a generator that makes one model call per step, yields how many pieces (or rows) that call
read, and returns its result. The engine interleaves such steps with everyone else's (a score, a prompt being
read, a songwriting search: docs/serving.md); outside it, `run_to_end` runs one whole. The engine sends each
step of a reading the time it may take (`send(seconds)`; None: a whole slice), shorter while streams wait for
their next token."""

from __future__ import annotations

import time
from collections.abc import Generator
from typing import TypeVar

T = TypeVar("T")
Steps = Generator[int, float | None, T]

STEP_SECONDS = 0.03  # what a step of one text's reading aims to take beside streams: each waits that long a token
FIRST_PIECES = 32  # a reading's first call, before its pace is known


def run_to_end(steps: Steps[T]) -> T:
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value


class Pace:
    """How many pieces the next call of one text's reading may read, so that a step takes about the seconds
    the engine allows it. A text gives the same bits however it is cut into calls (model.network, `slice_end`),
    so the cut may follow the clock: a model with a memory reads a piece several times slower than one without,
    and no one slice size suits both. `most`: the caller's limit (memory), what a step reads when time is no
    object."""

    def __init__(self, most: int, least: int = 2):
        self.most, self.least = most, least
        self.rate: float | None = None  # pieces a second, from the last call
        self._started = 0.0

    def next(self, seconds: float | None = None) -> int:
        """Pieces for the next call, in about `seconds` (None: `most`)."""
        self._started = time.perf_counter()
        if seconds is None:
            return self.most
        if self.rate is None:
            return max(self.least, min(FIRST_PIECES, self.most))
        return max(self.least, min(self.most, int(self.rate * seconds)))

    def read(self, pieces: int) -> None:
        """The call begun at `next` read `pieces`."""
        took = time.perf_counter() - self._started
        if pieces > 1 and took > 0:
            self.rate = pieces / took
