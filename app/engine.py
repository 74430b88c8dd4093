"""The serving engine: continuous batching of generation over one model, usable without HTTP.

One worker thread per model owns the model. Every iteration it runs the queued
small jobs (predict, the songwriting calls), gives the texts being read (new
prompts, scored texts: chunked prefill) turns of one slice each, round robin,
up to one slice's worth of pieces in all, then samples one token for every
running sequence and advances them all with ONE batched model call. So no
request waits behind another's long prompt for more than about one slice.
Finished, cancelled and timed-out sequences leave the batch (or the reading)
before the next call; a prompt read to its end joins the batch at once.
Torch's thread count is chosen per phase (`_threads_for`). An LSTM's state is a fixed-size
tensor per sequence, so joining and leaving is just stacking and selecting
rows. Results go back to the asyncio side through `loop.call_soon_threadsafe`,
so the event loop never waits on the model. docs/serving.md explains why.

A request's `Stream` yields TokenEvents, then one Finished whose reason says
what ended it. Every sequence ends exactly once, on the worker thread, in
`_finish`, whatever ended it; the event loop only asks (`Stream.cancel`).
"""

from __future__ import annotations

import asyncio
import enum
import functools
import logging
import os
import threading
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Callable, Generator
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import Tensor

from lyricist.model import Checkpoint, SamplingParams, sample
from lyricist.model.prediction import Prediction, predict
from lyricist.model.prompt_cache import SLICE, PromptCache, PromptReading
from lyricist.model.sampling import make_generator, random_seed
from lyricist.model.scoring import Score, read_score
from lyricist.model.tokenizer import TokenText

from .metrics import Metrics

log = logging.getLogger("lyricist.engine")

# A step of at most this many rows is a few clients' work: the event loop has little to do for them, so torch
# gets every core (a lone stream at the machine's speed); a bigger batch leaves the event loop a core of its own.
FEW_ROWS = 2
# /v1/predict's answers kept, by prompt and settings: a prediction is exact and the weights never change, and
# a writer's page asks again for what it showed (a filter cleared, a word taken back).
PREDICTIONS_KEPT = 256
# The event loop's share of one core (its CPU time over the last LOOP_WINDOW_S) above which the worker leaves it
# that core whatever the step: a client hammering cheap requests (answers kept, health checks) keeps it busy, and
# torch's spinning threads collapse when one of them shares a core with it (a 19,000-character score beside a
# stream of kept predictions ran at 2% of its speed with every core, docs/serving.md).
LOOP_BUSY = 0.25
LOOP_WINDOW_S = 0.05


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1

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


@dataclass(eq=False)
class _Sequence:
    request: GenerationRequest
    outbox: asyncio.Queue  # the Stream reads it; only the event loop puts into it (see _deliver)
    loop: asyncio.AbstractEventLoop
    prompt_ids: list[int]
    generator: torch.Generator
    decoder: Any
    deadline: float
    created: float = field(default_factory=time.perf_counter)
    text: str = ""  # everything decoded so far
    released: int = 0  # how much of `text` has been sent
    tokens: int = 0
    cancel_asked: bool = False  # set by the event loop; the worker ends the sequence at its next step
    finished: bool = False  # set by the worker thread only, in _finish
    held: list = field(default_factory=list)  # events of a non-incremental request, sent at its end
    reading: PromptReading | None = None  # its prompt, while it is being read (it holds a slot already)

    @property
    def cancelled(self) -> bool:
        return self.cancel_asked


@dataclass(eq=False)
class _Job:
    """Work for the worker thread: `fn()` run at once (a small job), or, sliced, a generator that reads one
    slice per `next()` and yields the pieces it read (a scored text); its return value is the result."""
    fn: Callable[[], Any]
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop
    sliced: bool = False
    steps: Generator[int, None, Any] | None = None
    cancelled: bool = False  # its awaiter is gone: not started, or dropped before its next slice


class Stream:
    """One request's events, on the asyncio side: TokenEvent... then one Finished. `cancel` is the handle
    the engine gave it: the sequence ends (reason "cancelled") and frees its slot before the next step."""

    def __init__(self, seed: int, prompt_tokens: int, events: asyncio.Queue, cancel: Callable[[], None]):
        self.id = f"gen-{uuid.uuid4().hex[:24]}"
        self.seed = seed
        self.prompt_tokens = prompt_tokens
        self._events = events
        self._cancel = cancel
        self._read_to_end = False  # this reader's own note: the sequence's end is the worker's

    async def __aiter__(self) -> AsyncIterator[Event]:
        while True:
            event = await self._events.get()
            if isinstance(event, Finished):
                self._read_to_end = True
                yield event
                return
            yield event

    def cancel(self) -> None:
        """End the generation, if it is still running: safe to call in any case, from the event loop."""
        if not self._read_to_end:
            self._cancel()

    async def result(self) -> tuple[list[TokenEvent], Finished]:
        tokens = []
        async for event in self:
            if isinstance(event, Finished):
                return tokens, event
            tokens.append(event)
        raise AssertionError("unreachable")


class ModelEngine:
    def __init__(self, checkpoint: Checkpoint, name: str | None = None, max_batch_size: int = 64,
                 max_queue: int = 256, metrics: Metrics | None = None, threads: int | None = None,
                 slice_tokens: int = SLICE):
        self.checkpoint = checkpoint
        self.model = checkpoint.model.eval()
        self.device = self.model.device  # every tensor the engine makes lives there
        self.threads = threads  # None: chosen per phase from the work at hand (_threads_for); else forced
        self.cores = available_cores()
        self.slice_tokens = slice_tokens  # the most pieces one call reads, and one iteration's reading budget
        self.tokenizer = checkpoint.tokenizer
        self.prompts = PromptCache(self.model)  # prefix states, for prompts that extend earlier ones
        self._predictions: OrderedDict[tuple, Prediction] = OrderedDict()  # used on the event loop only
        self.name = name or checkpoint.name
        self.max_batch_size = max_batch_size
        self.max_queue = max_queue
        self.metrics = metrics or Metrics()
        self._series = self.metrics.for_model(self.name)
        self._lock = threading.Condition()
        self._waiting: deque[_Sequence] = deque()
        self._leaving: list[_Sequence] = []  # cancelled while waiting: out of the queue, not yet finished
        self._jobs: deque[_Job] = deque()
        # Texts being read, a slice per turn, round robin: prompts of admitted sequences and sliced jobs.
        self._reading: deque[_Sequence | _Job] = deque()
        self._reading_rows = 0  # the sequences among them: they hold batch slots
        self._threads_now = 0
        self._loop_clock: int | None = None  # the event loop thread's CPU clock (LOOP_BUSY)
        self._loop_cpu = self._loop_checked = 0.0
        self._loop_busy = False
        self._stopping = False
        self._thread: threading.Thread | None = None
        # The running batch: one row per sequence, in the same order everywhere.
        self._running: list[_Sequence] = []
        self._state: Tensor | None = None
        self._logits: Tensor | None = None
        self._seen: Tensor | None = None

    # -- the asyncio side ---------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._work, name=f"engine-{self.name}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Take no new work; end what is waiting or running with reason "shutdown"."""
        with self._lock:
            self._stopping = True
            self._lock.notify()
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def queue_depth(self) -> int:
        return len(self._waiting) + len(self._jobs) + len(self._reading) - self._reading_rows

    def submit(self, request: GenerationRequest) -> Stream:
        """Queue a generation; its events arrive on the returned `Stream`. Call from the event loop."""
        self._watch_loop()
        seed = random_seed() if request.params.seed is None else request.params.seed
        request = replace(request, params=replace(request.params, seed=seed))
        prompt_ids = self.tokenizer.encode(request.prompt, add_bos=True)
        events: asyncio.Queue = asyncio.Queue()
        deadline = time.monotonic() + request.timeout_s if request.timeout_s is not None else float("inf")
        sequence = _Sequence(request, events, asyncio.get_running_loop(), prompt_ids, make_generator(seed),
                             self.tokenizer.incremental_decoder(), deadline)
        with self._lock:
            self._admissible()
            self._waiting.append(sequence)
            self._series.queue_depth.set(self.queue_depth)
            self._lock.notify()
        return Stream(seed, len(prompt_ids), events, functools.partial(self._cancel, sequence))

    async def call(self, fn: Callable[[], Any]) -> Any:
        """Run `fn()` on the worker thread between two model steps (it owns the model). For small work: it
        runs whole, so everything else waits for it; a long prompt is better read first (`read_prompt`)."""
        return await self._queue(_Job(fn, None, None))

    async def read(self, fn: Callable[[], Generator[int, None, Any]]) -> Any:
        """Sliced work: `fn()` (called on the worker thread) returns a generator that reads one slice per step
        and yields the pieces it read; its return value is the result. Its slices take turns with the other
        texts being read, between decode steps. If the awaiting task is cancelled, at most one more slice runs."""
        return await self._queue(_Job(fn, None, None, sliced=True))

    async def _queue(self, job: _Job) -> Any:
        self._watch_loop()
        job.loop = asyncio.get_running_loop()
        job.future = job.loop.create_future()
        with self._lock:
            self._admissible()
            self._jobs.append(job)
            self._series.queue_depth.set(self.queue_depth)
            self._lock.notify()
        try:
            return await job.future
        except asyncio.CancelledError:
            job.cancelled = True  # the worker skips it, or drops it before its next slice
            raise

    async def read_prompt(self, prompt: str | list[int]) -> None:
        """Read a prompt into the prompt cache in slices that take turns with other work, so that a job that
        prefills it next (`self.prompts.prefill`) finds it whole. Exact either way: the cache changes no bits."""
        ids = self.tokenizer.encode(prompt, add_bos=True) if isinstance(prompt, str) else prompt

        def steps() -> Generator[int, None, None]:
            reading = self.prompts.reader(ids)
            while not reading.done:
                yield reading.read(self.slice_tokens)

        await self.read(steps)

    async def predict(self, prompt: str, top_k: int, unit: str, temperature: float) -> Prediction:
        self._watch_loop()  # a kept answer never reaches _queue, and a stream of them is load too
        key = (prompt, top_k, unit, temperature)
        if (kept := self._predictions.get(key)) is not None:
            self._predictions.move_to_end(key)
            return kept
        ids = self.tokenizer.encode(prompt, add_bos=True)
        if len(ids) > self.slice_tokens:  # a long prompt: read it a slice at a time first
            await self.read_prompt(ids)
        found = await self.call(lambda: predict(self.model, self.tokenizer, prompt, top_k, unit, temperature,
                                                prompts=self.prompts))
        self._predictions[key] = found
        if len(self._predictions) > PREDICTIONS_KEPT:
            self._predictions.popitem(last=False)
        return found

    async def score(self, text: str) -> Score:
        """The likelihood of `text` read as a whole text (model.scoring), a slice per turn."""
        return await self.read(lambda: self._score(text))

    def _admissible(self) -> None:
        if self._stopping:
            raise ShuttingDown("the server is shutting down")
        if self.queue_depth >= self.max_queue:
            self.metrics.rejected.labels("queue_full").inc()
            raise QueueFull(f"model {self.name!r} has {self.queue_depth} requests waiting, the most allowed")

    def _cancel(self, sequence: _Sequence) -> None:
        """A stream's cancel handle. Only asks: the worker ends the sequence. A waiting one leaves the
        queue at once, so that its place is free to the next request."""
        with self._lock:
            if sequence.cancel_asked:
                return
            sequence.cancel_asked = True
            if sequence in self._waiting:
                self._waiting.remove(sequence)
                self._leaving.append(sequence)
                self._series.queue_depth.set(self.queue_depth)
            self._lock.notify()

    # -- the worker thread --------------------------------------------------------

    def _work(self) -> None:
        with torch.inference_mode():
            while True:
                with self._lock:
                    while not (self._stopping or self._jobs or self._running or self._waiting or self._leaving
                               or self._reading):
                        self._lock.wait()
                    if self._stopping:
                        break
                    jobs = list(self._jobs)
                    self._jobs.clear()
                    leaving, self._leaving = self._leaving, []
                    joining = []
                    while self._waiting and len(self._running) + self._reading_rows + len(joining) < self.max_batch_size:
                        joining.append(self._waiting.popleft())
                    self._series.queue_depth.set(self.queue_depth)
                self._use_threads(self._threads_for(reading=False))
                for job in jobs:
                    if job.sliced:
                        self._reading.append(job)
                    elif not job.cancelled:
                        self._run_job(job)
                events: list[tuple[_Sequence, Event]] = []
                for sequence in leaving:
                    self._finish(sequence, FinishReason.CANCELLED, events)
                try:
                    self._expire_waiting(events)
                    self._admit(joining, events)
                    if self._reading:
                        self._use_threads(self._threads_for(reading=True))
                        self._read_slices(events)
                    if self._running:
                        self._use_threads(self._threads_for(reading=False))
                        self._step(events)
                except Exception:  # a bug must not kill the worker: end the batch, keep serving
                    log.exception("engine step failed; ending the running sequences")
                    for sequence in self._running:
                        self._finish(sequence, FinishReason.ERROR, events)
                    self._keep([])
                self._post(events)
            self._shut_down()

    def _watch_loop(self) -> None:
        """Remember the calling thread (the event loop's) to watch its CPU time; Linux only, else nothing."""
        if self._loop_clock is None and hasattr(time, "pthread_getcpuclockid"):
            try:
                clock = time.pthread_getcpuclockid(threading.get_ident())
                # the first window starts now, not at the thread's start (its past CPU time is not load)
                self._loop_cpu, self._loop_checked = time.clock_gettime(clock), time.monotonic()
                self._loop_clock = clock
            except OSError:
                pass

    def _event_loop_busy(self) -> bool:
        now = time.monotonic()
        if self._loop_clock is not None and now - self._loop_checked >= LOOP_WINDOW_S:
            try:
                cpu = time.clock_gettime(self._loop_clock)
            except OSError:  # that thread has ended (a test's loop); the next caller's is watched
                self._loop_clock, self._loop_busy = None, False
                return False
            self._loop_busy = (cpu - self._loop_cpu) > LOOP_BUSY * (now - self._loop_checked)
            self._loop_cpu, self._loop_checked = cpu, now
        return self._loop_busy

    def _threads_for(self, reading: bool) -> int:
        """Torch threads for the next phase: LYRICIST_THREADS when set; else every core for a slice being read
        (the batch waits for it anyway) and for a step of a few rows, and all cores but one while the event
        loop is busy (LOOP_BUSY) and for a bigger batch, whose many clients keep the event loop busy (torch's
        threads spin while they wait for each other, so one descheduled by the event loop stalls the rest). No
        result depends on it: the kernels give the same bits at any thread count (tests/test_engine.py)."""
        if self.threads is not None:
            return self.threads
        if self._event_loop_busy():
            return max(1, self.cores - 1)
        if reading or len(self._running) <= FEW_ROWS:
            return self.cores
        return max(1, self.cores - 1)

    def _use_threads(self, count: int) -> None:
        if count != self._threads_now:  # per thread: the worker's own OpenMP setting
            torch.set_num_threads(count)
            self._threads_now = count

    def _run_job(self, job: _Job) -> None:
        try:
            result = job.fn()
        except Exception as error:  # noqa: BLE001 -- handed to the awaiting request, which answers with it
            _call_soon(job.loop, _settle, job.future, None, error)
        else:
            _call_soon(job.loop, _settle, job.future, result, None)

    def _expire_waiting(self, events: list) -> None:
        now = time.monotonic()
        with self._lock:
            expired = [s for s in self._waiting if s.deadline < now]
            for sequence in expired:
                self._waiting.remove(sequence)
        for sequence in expired:
            self._finish(sequence, FinishReason.TIMEOUT, events)

    def _admit(self, joining: list[_Sequence], events: list) -> None:
        """Give each new sequence its slot and start reading its prompt (a prompt read before is done at once)."""
        ready = []
        for sequence in joining:
            if sequence.cancel_asked:
                self._finish(sequence, FinishReason.CANCELLED, events)
                continue
            sequence.reading = self.prompts.reader(sequence.prompt_ids)
            if sequence.reading.done:
                ready.append(sequence)
            else:
                self._reading.append(sequence)
                self._reading_rows += 1
        self._join(ready)

    def _read_slices(self, events: list) -> None:
        """One round of chunked prefill: the texts being read take turns, one slice (one call) each, in
        order, until a slice's worth of pieces is read; one not done goes to the back. A cancelled or
        expired sequence, or a job whose awaiter left, is dropped before its turn and frees its slot."""
        now = time.monotonic()
        for item in [i for i in self._reading if i.cancelled or (isinstance(i, _Sequence) and i.deadline < now)]:
            self._reading.remove(item)
            if isinstance(item, _Sequence):
                self._reading_rows -= 1
                self._finish(item, FinishReason.CANCELLED if item.cancel_asked else FinishReason.TIMEOUT, events)
            elif item.steps is not None:
                item.steps.close()
        budget = self.slice_tokens
        ready = []
        for _ in range(len(self._reading)):
            if budget <= 0:
                break
            item = self._reading[0]  # it stays in the queue during its turn (what the tests look at)
            if isinstance(item, _Sequence):
                try:
                    budget -= item.reading.read(budget)
                except Exception:
                    log.exception("reading a prompt failed")
                    self._reading.popleft()
                    self._reading_rows -= 1
                    self._finish(item, FinishReason.ERROR, events)
                    continue
                if item.reading.done:
                    self._reading.popleft()
                    self._reading_rows -= 1
                    ready.append(item)
                    continue
            else:
                try:
                    if item.steps is None:
                        item.steps = item.fn()
                    budget -= next(item.steps)
                except StopIteration as done:
                    self._reading.popleft()
                    _call_soon(item.loop, _settle, item.future, done.value, None)
                    continue
                except Exception as error:  # noqa: BLE001 -- handed to the awaiting request
                    self._reading.popleft()
                    _call_soon(item.loop, _settle, item.future, None, error)
                    continue
            self._reading.rotate(-1)  # to the back: the next one's turn
        self._join(ready)

    def _join(self, ready: list[_Sequence]) -> None:
        """Add the rows of sequences whose prompts are read to the running batch."""
        if not ready:
            return
        states, logits = [], []
        seen = torch.zeros(len(ready), self.tokenizer.vocab_size, dtype=torch.bool, device=self.device)
        for row, sequence in enumerate(ready):
            states.append(sequence.reading.state)
            logits.append(sequence.reading.logits)
            sequence.reading = None
            seen[row, sequence.prompt_ids] = True
            self._running.append(sequence)
            self._series.prompt_tokens.inc(len(sequence.prompt_ids))
        self._state = self.model.stack_rows(([self._state] if self._state is not None else []) + states)
        self._logits = torch.cat(([self._logits] if self._logits is not None else []) + logits)
        self._seen = torch.cat(([self._seen] if self._seen is not None else []) + [seen])
        self._series.running.set(len(self._running))

    def _step(self, events: list) -> None:
        """Sample a token for every running sequence, then advance the survivors in one call."""
        now = time.monotonic()
        for sequence in self._running:
            if sequence.cancel_asked:
                self._finish(sequence, FinishReason.CANCELLED, events)
            elif sequence.deadline < now:
                self._finish(sequence, FinishReason.TIMEOUT, events)
        alive = [i for i, s in enumerate(self._running) if not s.finished]
        if len(alive) < len(self._running):
            self._keep(alive)
            if not self._running:
                return
        running = self._running
        batch = len(running)
        self._series.batch_size.observe(batch)
        params = [s.request.params for s in running]
        penalised = any(p.repetition_penalty != 1 for p in params)
        tokens = sample(self._logits, params, [s.generator for s in running], self._seen if penalised else None)
        token_ids = tokens.tolist()
        wanted = [i for i, s in enumerate(running) if s.request.logprobs is not None]
        logprobs = torch.log_softmax(self._logits[wanted].float(), dim=-1) if wanted else None
        keep = []
        now = time.perf_counter()
        for i, (sequence, token_id) in enumerate(zip(running, token_ids)):
            event, end = self._accept(sequence, token_id, logprobs[wanted.index(i)] if i in wanted else None)
            if event is not None and sequence.request.incremental:
                events.append((sequence, event))
            elif event is not None:
                sequence.held.append(event)
            if sequence.tokens == 1:
                self._series.ttft.observe(now - sequence.created)
            if end is None:
                keep.append(i)
            else:
                self._finish(sequence, end, events)
        self._series.generated_tokens.inc(batch)
        self._seen[torch.arange(batch, device=self.device), tokens] = True
        if len(keep) < batch:
            self._keep(keep)
            tokens = tokens[keep]
            if not self._running:
                return
        started = time.perf_counter()
        self._logits, self._state = self.model.step(tokens, self._state)
        self._series.tpot.observe(time.perf_counter() - started)

    def _keep(self, rows: list[int]) -> None:
        self._running = [self._running[i] for i in rows]
        self._series.running.set(len(rows))
        if not rows:
            self._state = self._logits = self._seen = None
            return
        self._state = self.model.select_rows(self._state, rows)
        self._logits = self._logits[rows]
        self._seen = self._seen[rows]

    def _accept(self, sequence: _Sequence, token_id: int,
                logprobs: Tensor | None) -> tuple[TokenEvent | None, FinishReason | None]:
        """What one sampled token makes: its TokenEvent (none for the end of the text), and the
        reason the sequence ends with it, if it does."""
        request = sequence.request
        sequence.tokens += 1
        if token_id == self.tokenizer.eos_id:
            sequence.text += sequence.decoder.flush()
            return None, FinishReason.EOS
        logprob = top = None
        if logprobs is not None:
            logprob = float(logprobs[token_id])
            if request.logprobs:
                values, index = logprobs.topk(request.logprobs)
                top = [(sequence.decoder.peek(j), v) for v, j in zip(values.tolist(), index.tolist())]
        before = len(sequence.text)
        piece = sequence.decoder.token(token_id)
        sequence.text += piece.text
        last = sequence.tokens >= request.max_new_tokens
        if last:
            sequence.text += sequence.decoder.flush()
        stop_at = _find_stop(sequence.text, request.stop, before)
        if stop_at is not None:
            sequence.text = sequence.text[:stop_at]
        safe = len(sequence.text) if stop_at is not None or last else _safe_end(sequence.text, request.stop)
        event = TokenEvent(token_id, sequence.text[sequence.released:safe], logprob, top, piece.data)
        sequence.released = max(sequence.released, safe)
        if stop_at is not None:
            return event, FinishReason.STOP
        return event, FinishReason.LENGTH if last else None

    def _finish(self, sequence: _Sequence, reason: FinishReason, events: list[tuple[_Sequence, Event]]) -> None:
        """The one end of every sequence, whatever ended it; only the worker thread calls it, and a
        sequence ends once. A non-incremental request gets its held token events only when it is
        complete; cut short, it gets only the Finished, with all its text."""
        if sequence.finished:
            return
        sequence.finished = True
        if reason is FinishReason.CANCELLED:
            self._series.cancelled.inc()
        if reason.complete:
            events.extend((sequence, event) for event in sequence.held)
        sequence.held = []
        events.append((sequence, Finished(reason, sequence.text, sequence.tokens)))

    def _post(self, events: list[tuple[_Sequence, Event]]) -> None:
        """Hand a step's events to the event loop in one wake-up."""
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Queue, Event]]] = {}
        for sequence, event in events:
            by_loop.setdefault(sequence.loop, []).append((sequence.outbox, event))
        for loop, batch in by_loop.items():
            _call_soon(loop, _deliver, batch)

    def _score(self, text: str) -> Generator[int, None, Score]:
        score = yield from read_score(self.model, self.tokenizer, text, self.slice_tokens)
        self._series.prompt_tokens.inc(len(score.token_ids) + 1)  # and the start marker
        return score

    def _shut_down(self) -> None:
        events: list[tuple[_Sequence, Event]] = []
        with self._lock:  # nothing new arrives (_stopping), but a waiting request may still be cancelled
            reading = list(self._reading)
            self._reading.clear()
            self._reading_rows = 0
            ending = [*self._running, *self._waiting, *self._leaving,
                      *(item for item in reading if isinstance(item, _Sequence))]
            self._waiting.clear()
            self._leaving.clear()
            jobs = list(self._jobs) + [item for item in reading if isinstance(item, _Job)]
            self._jobs.clear()
        for sequence in ending:
            self._finish(sequence, FinishReason.CANCELLED if sequence.cancel_asked else FinishReason.SHUTDOWN, events)
        self._keep([])
        self._post(events)
        for job in jobs:
            if job.steps is not None:
                job.steps.close()
            _call_soon(job.loop, _settle, job.future, None, ShuttingDown("the server is shutting down"))


def _call_soon(loop: asyncio.AbstractEventLoop, fn: Callable, *args: Any) -> None:
    try:
        loop.call_soon_threadsafe(fn, *args)
    except RuntimeError:  # that event loop is closed: whoever waited there is gone
        pass


def _deliver(events: list[tuple[asyncio.Queue, Event]]) -> None:
    """On the event loop: asyncio queues are not thread-safe, so the worker never touches them itself."""
    for outbox, event in events:
        outbox.put_nowait(event)


def _settle(future: asyncio.Future, result: Any, error: BaseException | None) -> None:
    if future.cancelled():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


def _find_stop(text: str, stops: tuple[str, ...], new_from: int) -> int | None:
    """Where the first stop string begins in `text`, looking only where new text could complete one."""
    found = [i for stop in stops if (i := text.find(stop, max(0, new_from - len(stop) + 1))) >= 0]
    return min(found) if found else None


def _safe_end(text: str, stops: tuple[str, ...]) -> int:
    """The end of the text that can be sent: what follows may still be the start of a stop string."""
    hold = 0
    for stop in stops:
        for n in range(min(len(stop) - 1, len(text)), hold, -1):
            if text.endswith(stop[:n]):
                hold = n
                break
    return len(text) - hold
