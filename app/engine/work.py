"""The units of work the engine holds: a generation (`Sequence`) and a job (`Job`) for the serving functions."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from lyricist.model.prompt_cache import PromptReading
from lyricist.model.steps import Steps

from .events import GenerationRequest


@dataclass(eq=False)
class Sequence:
    """One generation: its request, where its events go, and its progress. The worker thread owns it."""
    request: GenerationRequest
    outbox: asyncio.Queue  # the Stream reads it; only the event loop puts into it (handoff.deliver)
    loop: asyncio.AbstractEventLoop
    prompt_ids: list[int]
    generator: torch.Generator
    decoder: Any
    deadline: float
    first_pieces: list[int] | None = None  # the pieces the prompt's unread end allows first (None: any)
    created: float = field(default_factory=time.perf_counter)
    text: str = ""  # everything decoded so far
    released: int = 0  # how much of `text` has been sent
    tokens: int = 0
    cancel_asked: bool = False  # set by the event loop; the worker ends the sequence at its next step
    finished: bool = False  # set by the worker thread only, in ModelEngine._finish
    held: list = field(default_factory=list)  # events of a non-incremental request, sent at its end
    reading: PromptReading | None = None  # its prompt, while it is being read (it holds a slot already)

    @property
    def cancelled(self) -> bool:
        return self.cancel_asked


@dataclass(eq=False)
class Job:
    """Work for the worker thread: `fn()` run at once (a small job), or, sliced, a generator that reads one
    slice per `next()` and yields the pieces it read (a scored text); its return value is the result."""
    fn: Callable[[], Any]
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop
    sliced: bool = False
    work: str = "job"  # what it is, for the metrics: "score", "songwriting", "prompt", ...
    steps: Steps[Any] | None = None
    cancelled: bool = False  # its awaiter is gone: not started, or dropped before its next slice
