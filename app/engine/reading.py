"""Chunked prefill and sliced work: the texts being read (the prompts of admitted generations) and the sliced
jobs (a scored text, a songwriting search) take turns of one step (one model call) each, round robin, until a
round has read a slice's worth of pieces or taken ROUND_S, so a running stream waits for at most about one slice
between two of its tokens, whatever is being read or searched beside it."""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable

from lyricist.model.prompt_cache import PromptCache

from .events import FinishReason
from .handoff import call_soon, settle
from .work import Job, Sequence

log = logging.getLogger("lyricist.engine")

# A round's time budget besides its pieces: a search step's cost is mostly its own bookkeeping, not the rows it
# steps, so a round of several searches would otherwise hold the batch for several of them.
ROUND_S = 0.02

Finish = Callable[[Sequence, FinishReason], None]
Account = Callable[[str, int, float], None]  # (work, pieces, seconds) of one turn, for the metrics


class ReadingQueue:
    def __init__(self, prompts: PromptCache, account: Account = lambda work, pieces, seconds: None):
        self.prompts, self.account = prompts, account
        self.items: deque[Sequence | Job] = deque()
        self.rows = 0  # the sequences among them: they hold batch slots

    def __len__(self) -> int:
        return len(self.items)

    def add_job(self, job: Job) -> None:
        self.items.append(job)

    def admit(self, joining: list[Sequence], finish: Finish) -> list[Sequence]:
        """Start reading each new sequence's prompt; those read before (cached whole) are ready at once."""
        ready = []
        for sequence in joining:
            if sequence.cancel_asked:
                finish(sequence, FinishReason.CANCELLED)
                continue
            sequence.reading = self.prompts.reader(sequence.prompt_ids, mix_cache=False)  # it writes on
            if sequence.reading.done:
                ready.append(sequence)
            else:
                self.items.append(sequence)
                self.rows += 1
        return ready

    def read_round(self, budget: int, finish: Finish, step_seconds: float | None = None) -> list[Sequence]:
        """One round: the texts take turns, one slice (one call) each, in order, until `budget` pieces are read;
        one not done goes to the back. A job's step is sent `step_seconds`, the time it may take (None: a whole
        slice; model.steps). A cancelled or expired sequence, or a job whose awaiter left, is dropped before its
        turn and frees its slot. Returns the sequences whose prompts are now read."""
        now = time.monotonic()
        for item in [i for i in self.items if i.cancelled or (isinstance(i, Sequence) and i.deadline < now)]:
            if isinstance(item, Job) and item.steps is not None:
                item.steps.close()  # before it leaves the queue: gone from it means done with
            self.items.remove(item)
            if isinstance(item, Sequence):
                self.rows -= 1
                finish(item, FinishReason.CANCELLED if item.cancel_asked else FinishReason.TIMEOUT)
        ready = []
        started = time.perf_counter()
        for _ in range(len(self.items)):
            if budget <= 0 or time.perf_counter() - started >= ROUND_S:
                break
            item = self.items[0]  # it stays in the queue during its turn (what the tests look at)
            turn_started = time.perf_counter()
            if isinstance(item, Sequence):
                try:
                    pieces = item.reading.read(budget)
                    budget -= pieces
                    self.account("prompt", pieces, time.perf_counter() - turn_started)
                except Exception:
                    log.exception("reading a prompt failed")
                    self.items.popleft()
                    self.rows -= 1
                    finish(item, FinishReason.ERROR)
                    continue
                if item.reading.done:
                    self.items.popleft()
                    self.rows -= 1
                    ready.append(item)
                    continue
            else:
                try:
                    if item.steps is None:
                        item.steps = item.fn()
                        pieces = next(item.steps)
                    else:
                        pieces = item.steps.send(step_seconds)
                    budget -= pieces
                    self.account(item.work, pieces, time.perf_counter() - turn_started)
                except StopIteration as done:
                    self.items.popleft()
                    call_soon(item.loop, settle, item.future, done.value, None)
                    continue
                except Exception as error:  # noqa: BLE001 -- handed to the awaiting request
                    self.items.popleft()
                    call_soon(item.loop, settle, item.future, None, error)
                    continue
            self.items.rotate(-1)  # to the back: the next one's turn
        return ready

    def clear(self) -> tuple[list[Sequence], list[Job]]:
        """Empty the queue (shutting down): its sequences and its jobs."""
        items = list(self.items)
        self.items.clear()
        self.rows = 0
        return [i for i in items if isinstance(i, Sequence)], [i for i in items if isinstance(i, Job)]
