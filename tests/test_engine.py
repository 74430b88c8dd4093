"""The continuous-batching engine, without HTTP."""

import asyncio
import os
import time

import pytest
import torch

from lyricist.app.engine import Finished, FinishReason, GenerationRequest, ModelEngine, QueueFull, ShuttingDown
from lyricist.app.protocol import PredictRequest
from lyricist.app.registry import ModelRegistry
from lyricist.app.serving.predict import KeptPredictions
from lyricist.app.serving.predict import predict as serve_predict
from lyricist.app.settings import Settings
from lyricist.model import SamplingParams, generate, load_checkpoint
from lyricist.model.scoring import score_text


@pytest.fixture
def engine(served_checkpoint):
    engine = ModelEngine(load_checkpoint(served_checkpoint), max_batch_size=16, max_queue=8)
    engine.start()
    yield engine
    engine.stop()


def run(coro):
    return asyncio.run(coro)


async def generate_text(engine, request):
    tokens, finished = await engine.submit(request).result()
    return "".join(t.text for t in tokens), finished


NEIGHBOURS = [
    GenerationRequest("KING:", 40, SamplingParams(temperature=1.3, top_k=20, seed=5)),
    GenerationRequest("", 25, SamplingParams(temperature=0.7, top_p=0.8, repetition_penalty=1.3)),
    GenerationRequest("To be, or not", 50, SamplingParams(temperature=0, noise=0.5, seed=9)),
    GenerationRequest("O Romeo", 10, SamplingParams(temperature=1.0, min_p=0.1)),
    GenerationRequest("First Citizen:\nBefore we proceed", 60, SamplingParams(temperature=0.9)),
]


@pytest.mark.parametrize("params", [SamplingParams(temperature=0), SamplingParams(temperature=0.9, top_k=50, seed=3),
                                    SamplingParams(temperature=1.0, repetition_penalty=1.5, noise=0.3, seed=4)])
def test_a_sequence_gives_the_same_tokens_alone_and_in_a_busy_batch(engine, params):
    request = GenerationRequest("ROMEO:\n", 30, params)

    async def alone():
        return await generate_text(engine, request)

    async def crowded():
        others = [engine.submit(r) for r in NEIGHBOURS]  # they join first and leave at various steps
        await asyncio.sleep(0.01)
        mine = asyncio.ensure_future(generate_text(engine, request))
        more = [engine.submit(r) for r in NEIGHBOURS[:3]]  # and some join after it
        results = await asyncio.gather(mine, *(s.result() for s in others + more))
        return results[0]

    solo = run(alone())
    assert solo[1].completion_tokens == 30 and solo[0]
    assert run(crowded()) == solo


def test_greedy_engine_output_equals_the_plain_loop(engine):
    text, finished = run(generate_text(engine, GenerationRequest("ROMEO:", 20, SamplingParams(temperature=0))))
    plain = "".join(generate(engine.model, engine.tokenizer, "ROMEO:", 20, SamplingParams(temperature=0)))
    assert text == plain and finished.reason == "length"


def test_a_seed_is_drawn_and_reported_and_reproduces_the_output(engine):
    async def go():
        first = engine.submit(GenerationRequest("KING:", 15, SamplingParams(temperature=1.0)))
        tokens, _ = await first.result()
        again = engine.submit(GenerationRequest("KING:", 15, SamplingParams(temperature=1.0, seed=first.seed)))
        tokens2, _ = await again.result()
        return [t.id for t in tokens], [t.id for t in tokens2]

    a, b = run(go())
    assert a == b


def test_cancelling_frees_the_slot_before_the_next_step(engine):
    async def go():
        stream = engine.submit(GenerationRequest("", 100000, SamplingParams(temperature=1.0)))
        seen = 0
        async for event in stream:
            seen += 1
            if seen == 3:
                break
        assert len(engine.batch.sequences) == 1
        stream.cancel()
        deadline = time.monotonic() + 2
        while engine.batch.sequences and time.monotonic() < deadline:
            await asyncio.sleep(0.001)
        return engine.batch.sequences

    assert run(go()) == []
    assert engine.metrics.cancelled.labels(engine.name)._value.get() == 1


def test_the_waiting_queue_is_bounded(served_checkpoint):
    engine = ModelEngine(load_checkpoint(served_checkpoint), max_batch_size=1, max_queue=2)
    engine.start()

    async def go():
        long = [engine.submit(GenerationRequest("", 100000, SamplingParams()))]
        for _ in range(1000):  # until the worker has taken it into the batch
            if engine.queue_depth == 0:
                break
            await asyncio.sleep(0.01)
        long += [engine.submit(GenerationRequest("", 100000, SamplingParams())) for _ in range(2)]
        assert engine.queue_depth == 2  # the first is running, two wait
        with pytest.raises(QueueFull):
            engine.submit(GenerationRequest("", 5, SamplingParams()))
        long[2].cancel()  # a waiting request that leaves makes room at once
        engine.submit(GenerationRequest("", 5, SamplingParams())).cancel()
        for s in long:
            s.cancel()

    try:
        run(go())
    finally:
        engine.stop()


def test_stop_string_ends_before_it_and_is_not_included(engine):
    greedy = SamplingParams(temperature=0)
    full, _ = run(generate_text(engine, GenerationRequest("ROMEO:", 30, greedy)))
    stop = full[len(full) // 2: len(full) // 2 + 3]
    cut = full.index(stop)
    text, finished = run(generate_text(engine, GenerationRequest("ROMEO:", 30, greedy, stop=(stop, "never-seen"))))
    assert finished.reason == "stop" and text == full[:cut] and finished.text == full[:cut]


def test_logprobs_are_the_model_distribution(engine):
    async def go():
        return await engine.submit(GenerationRequest("ROMEO:", 3, SamplingParams(temperature=0), logprobs=3)).result()

    tokens, _ = run(go())
    for token in tokens:
        assert len(token.top) == 3 and token.logprob == pytest.approx(token.top[0][1])  # greedy takes the top one
        assert [lp for _, lp in token.top] == sorted((lp for _, lp in token.top), reverse=True)


def test_a_request_past_its_timeout_is_ended(engine):
    async def go():
        return await engine.submit(GenerationRequest("", 10**7, SamplingParams(), timeout_s=0.2)).result()

    started = time.monotonic()
    tokens, finished = run(go())
    assert finished.reason == "timeout" and time.monotonic() - started < 2 and len(tokens) > 0


def test_a_cancelled_sequence_ends_once_with_its_own_reason(engine):
    async def go():
        stream = engine.submit(GenerationRequest("", 100000, SamplingParams()))
        async for _ in stream:
            break  # one token, then the reader leaves
        stream.cancel()
        stream.cancel()  # a second cancel changes nothing
        _, finished = await stream.result()
        return finished

    finished = run(go())
    assert finished.reason == FinishReason.CANCELLED and finished.completion_tokens >= 1
    assert engine.metrics.cancelled.labels(engine.name)._value.get() == 1


def test_a_request_that_expires_while_waiting_ends_through_the_same_path(served_checkpoint):
    engine = ModelEngine(load_checkpoint(served_checkpoint), max_batch_size=1)
    engine.start()

    async def go():
        running = engine.submit(GenerationRequest("", 10**7, SamplingParams()))
        async for _ in running:
            break  # it holds the only slot
        waiting = engine.submit(GenerationRequest("", 5, SamplingParams(), timeout_s=0.1))
        events = [event async for event in waiting]
        running.cancel()
        return events, await running.result()

    try:
        events, (_, running_end) = run(go())
    finally:
        engine.stop()
    assert events == [Finished(FinishReason.TIMEOUT, "", 0)]  # no token, one end, "timed out" not "cancelled"
    assert running_end.reason == FinishReason.CANCELLED


def test_stopping_the_engine_ends_running_requests_with_a_reason(served_checkpoint):
    engine = ModelEngine(load_checkpoint(served_checkpoint))
    engine.start()

    async def go():
        stream = engine.submit(GenerationRequest("", 10**7, SamplingParams()))
        await asyncio.sleep(0.05)
        await asyncio.to_thread(engine.stop)
        return await stream.result()

    _, finished = run(go())
    assert finished.reason == "shutdown"


def test_a_repeated_prediction_is_the_kept_answer_and_needs_no_model_call(served_checkpoint):
    engine = ModelEngine(load_checkpoint(served_checkpoint))
    registry = ModelRegistry()
    registry.by_name[engine.name], registry.ready = engine, True
    kept, settings = KeptPredictions(), Settings()

    def predict(prompt, top_k, unit, temperature):
        body = PredictRequest(prompt=prompt, top_k=top_k, unit=unit, temperature=temperature)
        return run(serve_predict(body, settings, registry, kept, {}))

    engine.start()
    first = predict("ROMEO: I", 5, "word", 1.0)
    engine.stop()
    assert predict("ROMEO: I", 5, "word", 1.0) == first  # the worker is gone: no model call made it
    for other in [("ROMEO: I ", 5, "word", 1.0), ("ROMEO: I", 4, "word", 1.0), ("ROMEO: I", 5, "token", 1.0),
                  ("ROMEO: I", 5, "word", 0.5)]:
        with pytest.raises(ShuttingDown):  # any other prompt or setting is a new prediction
            predict(*other)


def test_score_matches_a_full_forward_pass(engine):
    ids = engine.tokenizer.encode("ROMEO: hello", add_bos=True)
    scored = run(engine.score("ROMEO: hello"))
    with torch.inference_mode():
        logits, _ = engine.model(torch.tensor([ids]))
    want = torch.log_softmax(logits[0, :-1], -1).gather(1, torch.tensor(ids[1:]).unsqueeze(1)).squeeze(1)
    assert scored.token_ids == ids[1:]
    assert scored.logprobs.tolist() == pytest.approx(want.tolist(), abs=1e-5)


# -- chunked prefill: long prompts and texts are read a slice per turn -------------------------------------------


def rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mb() -> float:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) / 1024 for line in status if line.startswith("VmHWM:"))


def reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")  # the peak starts again from now (Linux 4.0+)
        return True
    except OSError:
        return False


@pytest.fixture
def slicing_engine(served_checkpoint):
    engine = ModelEngine(load_checkpoint(served_checkpoint), max_batch_size=4, max_queue=16, slice_tokens=16)
    engine.start()
    yield engine
    engine.stop()


async def wait_for(condition, seconds=10.0):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        await asyncio.sleep(0.001)


def test_a_small_request_finishes_while_a_long_prompt_is_still_being_read(slicing_engine, shakespeare_text):
    engine = slicing_engine
    long_prompt = shakespeare_text[:60000]  # thousands of pieces: hundreds of slices of 16

    async def go():
        long = engine.submit(GenerationRequest(long_prompt, 3, SamplingParams(temperature=0)))
        await wait_for(lambda: engine.reading.rows == 1)
        small = await generate_text(engine, GenerationRequest("KING:", 5, SamplingParams(temperature=0)))
        prediction = await engine.predict("ROMEO:", 5, "token", 1.0)
        still_reading = engine.reading.rows == 1 and long._events.empty()
        _, long_end = await long.result()
        return small, prediction, still_reading, long_end

    (text, small_end), prediction, still_reading, long_end = run(go())
    assert small_end.reason == "length" and prediction.distribution
    assert still_reading  # both were answered before the long prompt was read
    assert long_end.reason == "length" and long_end.completion_tokens == 3


def test_a_sliced_job_is_given_a_step_time_while_streams_run_and_a_whole_slice_alone(slicing_engine):
    # A reading sets the length of its next slice by what the engine sends it (model.steps): a stream waits for
    # one step of it before each token, so beside streams a step gets STEP_SECONDS; alone, a whole slice.
    from lyricist.model.steps import STEP_SECONDS

    engine = slicing_engine

    def recording(sent):
        def steps():
            for _ in range(4):
                sent.append((yield 1))
        return steps

    async def go():
        alone, beside = [], []
        await engine.read(recording(alone), "job")
        stream = engine.submit(GenerationRequest("", 100000, SamplingParams(temperature=1.0)))
        await wait_for(lambda: len(engine.batch.sequences) == 1)
        await engine.read(recording(beside), "job")
        stream.cancel()
        return alone, beside

    alone, beside = run(go())
    assert alone == [None] * 4 and beside == [STEP_SECONDS] * 4


def test_a_small_request_is_answered_while_a_long_text_is_scored(slicing_engine, shakespeare_text):
    engine = slicing_engine
    text = shakespeare_text[:60000]

    async def go():
        scoring = asyncio.ensure_future(engine.score(text))
        await wait_for(lambda: any(getattr(item, "steps", None) is not None for item in list(engine.reading.items)))
        await engine.predict("ROMEO:", 5, "token", 1.0)
        small, _ = await generate_text(engine, GenerationRequest("KING:", 5, SamplingParams(temperature=0)))
        answered_first = not scoring.done()
        return answered_first, await scoring

    answered_first, scored = run(go())
    assert answered_first
    want = score_text(engine.model, engine.tokenizer, text)  # alone, in one go: the same bits
    assert scored.token_ids == want.token_ids and torch.equal(scored.logprobs, want.logprobs)


def test_cancelling_during_prefill_frees_the_slot_after_at_most_about_one_more_slice(served_checkpoint,
                                                                                    shakespeare_text):
    engine = ModelEngine(load_checkpoint(served_checkpoint), max_batch_size=1, slice_tokens=8)
    engine.start()

    async def go():
        long = engine.submit(GenerationRequest(shakespeare_text[:60000], 5, SamplingParams()))
        await wait_for(lambda: engine.reading.rows == 1 and engine.reading.items[0].reading.position > 0)
        sequence = engine.reading.items[0]
        at_cancel = sequence.reading.position
        long.cancel()
        other = engine.submit(GenerationRequest("KING:", 5, SamplingParams(temperature=0)))  # waits for the slot
        _, long_end = await long.result()
        _, other_end = await other.result()
        return long_end, other_end, at_cancel, sequence.reading

    try:
        long_end, other_end, at_cancel, reading = run(go())
    finally:
        engine.stop()
    assert long_end.reason == FinishReason.CANCELLED and long_end.completion_tokens == 0
    assert other_end.reason == "length"  # the slot was freed
    assert not reading.done and reading.position <= at_cancel + 2 * 8 + 1  # about one more slice, not the rest
    assert engine.reading.rows == 0 and not engine.reading.items


def test_a_score_whose_client_left_is_dropped_before_its_next_slice(slicing_engine, shakespeare_text):
    engine = slicing_engine

    async def go():
        scoring = asyncio.ensure_future(engine.score(shakespeare_text[:60000]))
        await wait_for(lambda: any(getattr(item, "steps", None) is not None for item in list(engine.reading.items)))
        job = next(item for item in list(engine.reading.items) if getattr(item, "steps", None) is not None)
        scoring.cancel()
        await wait_for(lambda: not engine.reading.items)
        return job

    job = run(go())
    assert job.steps.gi_frame is None  # closed, not read to its end
    assert engine.queue_depth == 0


@pytest.mark.parametrize("threads, slice_tokens, company", [
    (2, 256, True), (None, 7, True), (1, 4, False), (2, 1024, False), (None, 16, False)])
def test_seeded_results_are_the_same_bits_whatever_the_threads_slices_or_company(
        served_checkpoint, shakespeare_text, threads, slice_tokens, company):
    checkpoint = load_checkpoint(served_checkpoint)
    request = GenerationRequest(shakespeare_text[:1500], 25, SamplingParams(temperature=0.9, top_k=40, seed=7),
                                logprobs=2)

    def tokens(threads, slice_tokens, company):
        engine = ModelEngine(checkpoint, max_batch_size=16, max_queue=32, threads=threads, slice_tokens=slice_tokens)
        engine.start()

        async def go():
            others = [engine.submit(r) for r in NEIGHBOURS] if company else []
            if company:  # a long prompt being read and texts being scored beside it
                others.append(engine.submit(GenerationRequest(shakespeare_text[2000:9000], 5, SamplingParams(seed=1))))
            scores = [asyncio.ensure_future(engine.score(shakespeare_text[:3000]))] if company else []
            mine = await engine.submit(request).result()
            await asyncio.gather(*(s.result() for s in others), *scores)
            return [(t.id, t.logprob, t.top) for t in mine[0]], mine[1]

        try:
            return run(go())
        finally:
            engine.stop()

    reference = tokens(1, 256, False)
    assert reference[1].completion_tokens == 25
    assert tokens(threads, slice_tokens, company) == reference  # ids, logprobs and top lists, to the bit


def test_memory_after_a_burst_of_long_scores_returns_to_its_level(slicing_engine, shakespeare_text):
    engine = slicing_engine
    engine.slice_tokens = int(os.environ.get("SLICE_PROBE", 256))
    text = shakespeare_text[:60000]  # ~18,000 pieces: the whole text's logits would be ~350 MB in float64 steps

    async def burst(count):
        return await asyncio.gather(*(engine.score(text) for _ in range(count)))

    run(burst(1))  # warm: the allocator's pools at their working size
    before = rss_mb()
    peak_known = reset_peak_rss()
    scores = run(burst(4))
    peak, after = peak_rss_mb(), rss_mb()
    assert all(len(s.token_ids) > 10_000 for s in scores)
    assert after - before < 64, (before, after)
    if peak_known:  # while it ran, too: a slice's few MB, not the text's hundreds
        assert peak - before < 96, (before, peak)
