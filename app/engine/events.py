"""What the engine is asked and what it answers: a generation's request, its events, and why it ended."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from lyricist.model import SamplingParams
from lyricist.model.tokenizer import TokenText


class QueueFull(Exception):
    """The waiting queue is at its bound; try again later."""


class ShuttingDown(Exception):
    """The engine takes no new work."""


@dataclass(frozen=True)
class GenerationRequest:
    prompt: str  # read as the start of a text
    max_new_tokens: int
    params: SamplingParams = field(default_factory=SamplingParams)  # a missing seed is drawn and reported
    stop: tuple[str, ...] = ()
    logprobs: int | None = None  # None: no logprobs; k: the chosen token's and the k most likely
    timeout_s: float | None = None  # from submission; None: no limit
    incremental: bool = True  # False: all events come at the end (saves the event loop a wake-up per token)


@dataclass
class TokenEvent:
    id: int
    text: str  # the text this token releases (held back while it may be the start of a stop string)
    logprob: float | None = None
    top: list[tuple[TokenText, float]] | None = None  # the likeliest pieces at this step, each as it would read
    data: bytes = b""  # the piece's own bytes


class FinishReason(enum.StrEnum):
    LENGTH = "length"
    STOP = "stop"  # one of the request's stop strings
    EOS = "eos"  # the model ended the text
    # The engine ended it:
    CANCELLED = "cancelled"  # its stream was cancelled (the client left)
    TIMEOUT = "timeout"  # past the request's timeout_s
    SHUTDOWN = "shutdown"
    ERROR = "error"  # a model step failed

    @property
    def complete(self) -> bool:
        """Whether the text ended as the request asked, not cut short by the engine."""
        return self in (FinishReason.LENGTH, FinishReason.STOP, FinishReason.EOS)


@dataclass
class Finished:
    reason: FinishReason
    text: str  # the whole text generated
    completion_tokens: int


Event = TokenEvent | Finished
