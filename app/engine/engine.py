"""ModelEngine: continuous batching over one model on one worker thread, usable without HTTP.

One worker thread per model owns the model. Every iteration it runs the queued small jobs (`call`), gives the
texts being read (new prompts, sliced jobs: `reading.py`) a round of one slice each, then samples one token for
every running sequence and advances them all with ONE batched model step (`batch.py`). Finished, cancelled and
timed-out sequences leave the batch (or the reading) before the next call; a prompt read to its end joins the
batch at once. Results go back to the event loop through `handoff.py`, so the event loop never waits on the
model. docs/serving.md explains the scheduling; docs/architecture.md names the file for each concern.

A request's `Stream` yields TokenEvents, then one Finished whose reason says what ended it. Every sequence ends
exactly once, on the worker thread, in `_finish`, whatever ended it; the event loop only asks (`Stream.cancel`).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import torch
from lyricist.model import Checkpoint
from lyricist.model.prediction import Prediction, predict
from lyricist.model.prompt_cache import SLICE, PromptCache
from lyricist.model.sampling import make_generator, random_seed
from lyricist.model.scoring import Score, read_score
from lyricist.model.steps import STEP_SECONDS, Steps

from ..metrics import Metrics
from .batch import RunningBatch
from .detokenize import accept
from .events import Event, Finished, FinishReason, GenerationRequest, QueueFull, ShuttingDown
from .handoff import call_soon, deliver, settle
from .reading import ReadingQueue
from .stream import Stream
from .threads import ThreadPolicy
from .work import Job, Sequence

log = logging.getLogger("lyricist.engine")

# A reading round's pieces while sequences are running: a 256-piece slice of a scored text takes ~40 ms on two
# cores, and a stream waits for the round before each token; 64 pieces (a scored slice decodes in blocks of 64)
# keep a small generation beside a 20,000-character score within a second (bench/hostile.py); the slicing
# changes no result (model.network).
SLICE_BESIDE_STREAMS = 64


class ModelEngine:
    def __init__(self, checkpoint: Checkpoint, name: str | None = None, max_batch_size: int = 64,
                 max_queue: int = 256, metrics: Metrics | None = None, threads: int | None = None,
                 slice_tokens: int = SLICE):
        self.checkpoint = checkpoint
        self.model = checkpoint.model.eval()
        self.device = self.model.device  # every tensor the engine makes lives there
        self.threads = ThreadPolicy(threads)
        self.slice_tokens = slice_tokens  # the most pieces one call reads, and one iteration's reading budget
        self.tokenizer = checkpoint.tokenizer
        self.prompts = PromptCache(self.model)  # prefix states, for prompts that extend earlier ones
        self.name = name or checkpoint.name
        self.max_batch_size = max_batch_size
        self.max_queue = max_queue
        self.metrics = metrics or Metrics()
        self._series = self.metrics.for_model(self.name)
        self._lock = threading.Condition()
        self._waiting: deque[Sequence] = deque()
        self._leaving: list[Sequence] = []  # cancelled while waiting: out of the queue, not yet finished
        self._jobs: deque[Job] = deque()
        self.reading = ReadingQueue(self.prompts, self._account)
        self.batch = RunningBatch(self.model, self.tokenizer.vocab_size)
        self._stopping = False
        self._thread: threading.Thread | None = None

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
        return len(self._waiting) + len(self._jobs) + len(self.reading) - self.reading.rows

    def watch_loop(self) -> None:
        """The event loop's load counts in the thread policy (threads.py); work answered without the engine
        (a kept prediction) calls this too, since a stream of it is load."""
        self.threads.watch_loop()

    def submit(self, request: GenerationRequest) -> Stream:
        """Queue a generation; its events arrive on the returned `Stream`. Call from the event loop."""
        self.watch_loop()
        seed = random_seed() if request.params.seed is None else request.params.seed
        request = replace(request, params=replace(request.params, seed=seed))
        prompt_ids, typed = self.tokenizer.encode_prompt(request.prompt)
        events: asyncio.Queue = asyncio.Queue()
        deadline = time.monotonic() + request.timeout_s if request.timeout_s is not None else float("inf")
        sequence = Sequence(request, events, asyncio.get_running_loop(), prompt_ids, make_generator(seed),
                            self.tokenizer.incremental_decoder(typed), deadline,
                            first_pieces=self.tokenizer.pieces_beginning(typed) if typed else None)
        with self._lock:
            self._admissible()
            self._waiting.append(sequence)
            self._series.queue_depth.set(self.queue_depth)
            self._lock.notify()
        return Stream(seed, len(prompt_ids) + bool(typed), events, functools.partial(self._cancel, sequence))

    async def call(self, fn: Callable[[], Any]) -> Any:
        """Run `fn()` on the worker thread between two model steps (it owns the model). For small work: it
        runs whole, so everything else waits for it; a long prompt is better read first (`read_prompt`)."""
        return await self._queue(Job(fn, None, None))

    async def read(self, fn: Callable[[], Steps[Any]], work: str = "job") -> Any:
        """Sliced work: `fn()` (called on the worker thread) returns a generator that makes one model call per
        step and yields the pieces (or search rows) it read; its return value is the result (model.steps). Its
        steps take turns with the texts being read, between decode steps; `work` names it in the metrics. If
        the awaiting task is cancelled, at most one more step runs."""
        return await self._queue(Job(fn, None, None, sliced=True, work=work))

    async def _queue(self, job: Job) -> Any:
        self.watch_loop()
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

        def steps() -> Steps[None]:
            yield from self.prompts.reader(ids).steps(self.slice_tokens)

        await self.read(steps, "prompt")

    async def predict(self, prompt: str, top_k: int, unit: str, temperature: float) -> Prediction:
        ids, _ = self.tokenizer.encode_prompt(prompt)
        if len(ids) > self.slice_tokens:  # a long prompt: read it a slice at a time first
            await self.read_prompt(ids)
        return await self.call(lambda: predict(self.model, self.tokenizer, prompt, top_k, unit, temperature,
                                               prompts=self.prompts))

    async def score(self, text: str) -> Score:
        """The likelihood of `text` read as a whole text (model.scoring), a slice per turn."""
        return await self.read(lambda: self._score(text), "score")

    def _admissible(self) -> None:
        if self._stopping:
            raise ShuttingDown("the server is shutting down")
        if self.queue_depth >= self.max_queue:
            self.metrics.rejected.labels("queue_full").inc()
            raise QueueFull(f"model {self.name!r} has {self.queue_depth} requests waiting, the most allowed")

    def _cancel(self, sequence: Sequence) -> None:
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
                    while not (self._stopping or self._jobs or self.batch or self._waiting or self._leaving
                               or self.reading):
                        self._lock.wait()
                    if self._stopping:
                        break
                    jobs = list(self._jobs)
                    self._jobs.clear()
                    leaving, self._leaving = self._leaving, []
                    joining = []
                    while self._waiting and len(self.batch) + self.reading.rows + len(joining) < self.max_batch_size:
                        joining.append(self._waiting.popleft())
                    self._series.queue_depth.set(self.queue_depth)
                self.threads.use()
                for job in jobs:
                    if job.sliced:
                        self.reading.add_job(job)
                    elif not job.cancelled:
                        self._run_job(job)
                events: list[tuple[Sequence, Event]] = []
                finish = functools.partial(self._finish, events=events)
                for sequence in leaving:
                    finish(sequence, FinishReason.CANCELLED)
                try:
                    self._expire_waiting(finish)
                    self._join(self.reading.admit(joining, finish))
                    if self.reading:
                        # Beside running streams, shorter slices: a stream's next token waits for one of them.
                        budget = min(self.slice_tokens, SLICE_BESIDE_STREAMS) if self.batch else self.slice_tokens
                        self._join(self.reading.read_round(budget, finish, STEP_SECONDS if self.batch else None))
                    if self.batch:
                        self._step(events)
                except Exception:  # a bug must not kill the worker: end the batch, keep serving
                    log.exception("engine step failed; ending the running sequences")
                    for sequence in self.batch.sequences:
                        finish(sequence, FinishReason.ERROR)
                    self._keep([])
                self._post(events)
            self._shut_down()

    def _run_job(self, job: Job) -> None:
        try:
            result = job.fn()
        except Exception as error:  # noqa: BLE001 -- handed to the awaiting request, which answers with it
            call_soon(job.loop, settle, job.future, None, error)
        else:
            call_soon(job.loop, settle, job.future, result, None)

    def _expire_waiting(self, finish: Callable[[Sequence, FinishReason], None]) -> None:
        now = time.monotonic()
        with self._lock:
            expired = [s for s in self._waiting if s.deadline < now]
            for sequence in expired:
                self._waiting.remove(sequence)
        for sequence in expired:
            finish(sequence, FinishReason.TIMEOUT)

    def _join(self, ready: list[Sequence]) -> None:
        """Sequences whose prompts are read join the running batch."""
        if not ready:
            return
        self.batch.join(ready)
        for sequence in ready:
            self._series.prompt_tokens.inc(len(sequence.prompt_ids))
        self._series.running.set(len(self.batch))

    def _step(self, events: list) -> None:
        """Sample a token for every running sequence, then advance the survivors in one call."""
        now = time.monotonic()
        for sequence in self.batch.sequences:
            if sequence.cancel_asked:
                self._finish(sequence, FinishReason.CANCELLED, events)
            elif sequence.deadline < now:
                self._finish(sequence, FinishReason.TIMEOUT, events)
        alive = [i for i, s in enumerate(self.batch.sequences) if not s.finished]
        if len(alive) < len(self.batch):
            self._keep(alive)
            if not self.batch:
                return
        running = self.batch.sequences
        size = len(running)
        self._series.batch_size.observe(size)
        wanted, logprobs = self.batch.logprobs()
        tokens = self.batch.sample()
        keep = []
        now = time.perf_counter()
        for i, (sequence, token_id) in enumerate(zip(running, tokens.tolist())):
            event, end = accept(sequence, token_id, self.tokenizer.eos_id,
                                logprobs[wanted.index(i)] if i in wanted else None)
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
        self._series.generated_tokens.inc(size)
        if len(keep) < size:
            self._keep(keep)
            tokens = tokens[keep]
            if not self.batch:
                return
        started = time.perf_counter()
        self.batch.advance(tokens)
        took = time.perf_counter() - started
        self._series.tpot.observe(took)
        self._account("decode", len(tokens), took)

    def _account(self, work: str, pieces: int, seconds: float) -> None:
        self.metrics.engine_pieces.labels(self.name, work).inc(pieces)
        self.metrics.engine_seconds.labels(self.name, work).inc(seconds)

    def _keep(self, rows: list[int]) -> None:
        self.batch.keep(rows)
        self._series.running.set(len(rows))

    def _finish(self, sequence: Sequence, reason: FinishReason, events: list[tuple[Sequence, Event]]) -> None:
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

    def _post(self, events: list[tuple[Sequence, Event]]) -> None:
        """Hand a step's events to the event loop in one wake-up."""
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Queue, Event]]] = {}
        for sequence, event in events:
            by_loop.setdefault(sequence.loop, []).append((sequence.outbox, event))
        for loop, batch in by_loop.items():
            call_soon(loop, deliver, batch)

    def _score(self, text: str) -> Steps[Score]:
        score = yield from read_score(self.model, self.tokenizer, text, self.slice_tokens)
        self._series.prompt_tokens.inc(len(score.token_ids) + 1)  # and the start marker
        return score

    def _shut_down(self) -> None:
        events: list[tuple[Sequence, Event]] = []
        with self._lock:  # nothing new arrives (_stopping), but a waiting request may still be cancelled
            reading, reading_jobs = self.reading.clear()
            ending = [*self.batch.sequences, *self._waiting, *self._leaving, *reading]
            self._waiting.clear()
            self._leaving.clear()
            jobs = list(self._jobs) + reading_jobs
            self._jobs.clear()
        for sequence in ending:
            self._finish(sequence, FinishReason.CANCELLED if sequence.cancel_asked else FinishReason.SHUTDOWN, events)
        self._keep([])
        self._post(events)
        for job in jobs:
            if job.steps is not None:
                job.steps.close()
            call_soon(job.loop, settle, job.future, None, ShuttingDown("the server is shutting down"))
