"""Sliced work: a generator that makes one model call per step, yields how many pieces (or rows) that call
read, and returns its result. The engine interleaves such steps with everyone else's (a score, a prompt being
read, a songwriting search: docs/serving.md); outside it, `run_to_end` runs one whole."""

from __future__ import annotations

from collections.abc import Generator
from typing import TypeVar

T = TypeVar("T")
Steps = Generator[int, None, T]


def run_to_end(steps: Steps[T]) -> T:
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value
