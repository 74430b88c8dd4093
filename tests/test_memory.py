"""The song's memory (model/memory.py): attention over the last layer's past outputs and the continuous cache,
in the model, the engine, the prompt cache, training and the checkpoint."""

import asyncio
import dataclasses
import json

import pytest
import torch

from lyricist.app.engine import GenerationRequest, ModelEngine
from lyricist.model import LanguageModel, ModelConfig, SamplingParams, load_checkpoint, save_checkpoint
from lyricist.model.cache_tuning import cache_probabilities, save_cache_settings, tune
from lyricist.model.memory import NO_PIECE, CacheConfig, Recall
from lyricist.model.prompt_cache import PromptCache
from lyricist.model.scoring import score_text

from .helpers import same_state, torch_threads

ATTENTION = {"attention": {"window": 12}}
BOTH = {"attention": {"window": 12}, "cache": {"window": 20, "theta": 0.5, "lam": 0.2}}
CACHE = {"cache": {"window": 16, "theta": 1.0, "lam": 0.3, "match_cosine": 0.5, "match_lam": 0.6}}


def model_with(settings: dict, vocab: int = 60, seed: int = 0) -> LanguageModel:
    torch.manual_seed(seed)
    return LanguageModel(ModelConfig(vocab_size=vocab, layers=2, embedding_size=12, hidden_size=16, **settings)).eval()


def ids(n: int, seed: int = 0, vocab: int = 60) -> torch.Tensor:
    return torch.randint(3, vocab, (n,), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("settings", [ATTENTION, BOTH, CACHE])
def test_any_cut_into_reads_gives_the_bits_of_one_read(settings):
    model = model_with(settings)
    text = ids(70)
    reads_as_one(model, text, ([5, 30, 70], [2, 4, 9, 40, 68, 70], [35, 70]))


@pytest.mark.parametrize("threads", [1, 2])
def test_any_cut_into_reads_gives_the_bits_of_one_read_at_the_shipped_shape(threads):
    """The cache's products go 16 positions at a time, against the ring and against the block's own outputs: at
    the shipped shape (a window of 512, so the two products have other widths) a cut anywhere, a block begun in
    one read and ended in the next, still gives the bits of one read."""
    torch.manual_seed(0)
    cache = {"window": 512, "theta": 1.6, "lam": 0.1, "match_cosine": 0.5, "match_lam": 0.5}
    model = LanguageModel(ModelConfig(vocab_size=4000, layers=2, hidden_size=512, embedding_size=512,
                                      cache=cache)).eval()
    text = ids(700, vocab=4000)
    with torch_threads(threads):
        reads_as_one(model, text, ([2, 5, 22, 300, 515, 700], [17, 33, 48, 511, 700], [256, 512, 700]))


def reads_as_one(model: LanguageModel, text: torch.Tensor, cuttings: tuple[list[int], ...]) -> None:
    """Each cutting of `text` (the ends of its reads) gives the logits and the state of one read of it, bit for
    bit."""
    with torch.inference_mode():
        whole, whole_state = model.read(text, every_piece=True)
        for cuts in cuttings:
            state, parts, start = None, [], 0
            for end in cuts:
                logits, state = model.read(text[start:end], state, every_piece=True)
                parts.append(logits)
                start = end
            assert torch.equal(torch.cat(parts), whole) and same_state(state, whole_state), cuts


def test_a_read_longer_than_the_window_recalls_what_short_reads_recall():
    """A call of more pieces than the ring has slots is read in parts, each writing the ring where it is: the
    match cosines still compare each position with the slots as they stood, not as a later position left them."""
    model = model_with(CACHE)
    text = ids(70, seed=4)
    with torch.inference_mode():
        whole = model.features(text.view(1, -1)).recall
        state, parts = None, []
        for start in range(0, 70, 10):
            features = model.features(text[start:start + 10].view(1, -1), state)
            parts.append(features.recall)
            state = features.state
    assert torch.equal(torch.cat([p.closeness for p in parts], dim=1), whole.closeness)
    assert torch.equal(torch.cat([p.weights for p in parts], dim=1), whole.weights)


@pytest.mark.parametrize("settings", [ATTENTION, BOTH])
def test_training_reads_a_chunk_as_inference_reads_it(settings):
    """The chunk at once (training) and position by position over the ring (inference) are the same
    arithmetic, up to rounding; the cache is inference's alone, so it is left off here."""
    model = model_with({**settings, "cache": {}})
    text = ids(50, seed=3)
    with torch.no_grad():
        want, _ = model.read(text, every_piece=True)
        model.train()
        model.output_dropout.p = model.input_dropout.p = 0.0
        state, parts = None, []
        for start, end in ((0, 20), (20, 50)):
            features = model.features(text[start:end].view(1, -1), state)
            parts.append(model.logits(features.dropped[0]))
            state = features.state
    torch.testing.assert_close(torch.cat(parts), want, rtol=1e-5, atol=1e-5)


def test_the_window_is_the_last_outputs_whatever_came_before():
    """Attention reads a window, not the whole past: two texts that differ only before the window give the
    same logits after it (the recurrent state forgotten by setting it equal)."""
    model = model_with(ATTENTION)
    a, b = ids(40, seed=1), ids(40, seed=2)
    tail = ids(12, seed=5)  # as long as the window: nothing of a or b is in it at the tail's last piece
    with torch.inference_mode():
        _, state_a = model.read(a)
        _, state_b = model.read(b)
        state_b = type(state_b)(state_a.rnn, state_b.memory, state_b.next_pieces, state_b.length)
        logits_a, _ = model.read(tail, state_a)
        logits_b, _ = model.read(tail, state_b)
    assert torch.equal(logits_a, logits_b)


def test_the_cache_recalls_what_followed_before():
    """A text that repeats a phrase: with the cache on, the phrase's second time is far likelier."""
    model = model_with({})
    cached = model_with(CACHE)
    cached.load_state_dict(model.state_dict())
    phrase = ids(10, seed=9)
    text = torch.cat([ids(6, seed=4), phrase, ids(4, seed=6), phrase])
    with torch.inference_mode():
        plain, _ = model.read(text, every_piece=True)
        mixed, _ = cached.read(text, every_piece=True)
    targets = text[1:]
    def loss(logits, a, b):
        return -torch.log_softmax(logits[a:b], -1)[torch.arange(b - a), targets[a:b]].sum()
    second = slice(len(text) - 10, len(text) - 1)  # predicting the phrase's second time, after its first piece
    assert loss(mixed, second.start, second.stop) < 0.85 * loss(plain, second.start, second.stop)
    torch.testing.assert_close(mixed.exp().sum(-1), torch.ones(len(text), dtype=mixed.dtype))


def test_the_mixture_is_the_definition_at_every_piece():
    """(1 − λ) p_model + λ p_cache over the whole vocabulary, though only the slots' pieces are mixed: a piece held
    by several slots sums their weights, an unknown slot adds nothing, a row that recalls nothing keeps its
    distribution, and a match takes the match share."""
    config = CacheConfig(window=5, theta=1.0, lam=0.2, match_cosine=0.9, match_lam=0.7)
    vocab, rows, slots = 37, 4, 5  # a vocabulary and a window of no multiple of 16
    logits = torch.randn(rows, vocab, generator=torch.Generator().manual_seed(3)) * 4
    pieces = torch.tensor([[4, 9, 4, NO_PIECE, 36], [1, 2, 3, 4, 5], [NO_PIECE] * 5, [0, 0, 7, 7, 7]])
    weights = torch.tensor([[0.1, 0.3, 0.2, 0.0, 0.4], [0.2] * 5, [0.0] * 5, [0.5, 0.1, 0.1, 0.2, 0.1]])
    closeness = torch.tensor([0.5, 0.95, 0.99, 0.2])
    mixed = Recall(weights.view(rows, 1, slots), pieces.view(rows, 1, slots), closeness.view(rows, 1)).mix(logits, config)
    share = torch.tensor([0.2, 0.7, 0.0, 0.2], dtype=torch.float64).unsqueeze(1)  # row 2 recalls nothing
    cache = torch.zeros(rows, vocab, dtype=torch.float64).scatter_add_(1, pieces.clamp_min(0), weights.double())
    expected = torch.log((1 - share) * torch.softmax(logits.double(), -1) + share * cache)
    torch.testing.assert_close(mixed.double(), expected, rtol=0, atol=1e-5)
    assert torch.equal(mixed[2], torch.log_softmax(logits[2], -1))


def test_a_ring_cut_to_the_slots_a_read_will_use_reads_as_the_whole_ring():
    """Texts read side by side after a short beginning each carry a copy of the ring; `narrowed` cuts it to the
    slots the reading will fill, and the reading gives the whole ring's bits. A beginning longer than the rows'
    own reading, or one whose ring would wrap, has its slots shared instead (the next test)."""
    model = model_with({"cache": {**CACHE["cache"], "window": 64}})
    with torch.inference_mode():
        _, state = model.read(ids(8))
        narrow = state.narrowed(10)
        assert narrow.memory.shape[1] == narrow.next_pieces.shape[1] == 18 and state.memory.shape[1] == 64
        assert narrow.shared is None and state.narrowed(5).shared is not None
        rows = torch.stack([ids(10, seed=1), ids(10, seed=2)])
        wide_logits, wide_state = model.read_rows(rows, model.repeat_rows(state, 2))
        narrow_logits, narrow_state = model.read_rows(rows, model.repeat_rows(narrow, 2))
    assert torch.equal(narrow_logits, wide_logits)
    assert torch.equal(narrow_state.memory, wide_state.memory[:, :18])
    assert torch.equal(narrow_state.next_pieces, wide_state.next_pieces[:, :18])


@pytest.mark.parametrize("read", [100, 60, 20])  # a ring that has wrapped, one that will, one that will not
def test_rows_that_continue_a_long_text_share_its_slots_and_read_as_with_whole_rings(read):
    """Rows side by side after a text longer than what they will read would each copy its slots; `narrowed` keeps
    them once for all the rows (`SharedSlots`), each row's own ring holding the text's last position and what
    the row reads next. Step by step and read at once, the rows get the whole rings' figures; a step past the
    own ring's end makes the whole ring first, the very one the whole rings have, as does stacking rows of
    other texts."""
    model = model_with({"cache": {**CACHE["cache"], "window": 64}})
    rows = torch.stack([ids(10, seed=s) for s in (1, 2, 3)])
    with torch.inference_mode():
        _, state = model.read(ids(read))
        narrow = state.narrowed(6)
        assert narrow.memory.shape[1] == 7 and narrow.shared.memory.shape[0] == min(read, 64) - 1
        whole, shared = model.repeat_rows(state, 3), model.repeat_rows(narrow, 3)
        for t in range(10):
            whole_logits, whole = model.step(rows[:, t], whole, invariant=False)
            shared_logits, shared = model.step(rows[:, t], shared, invariant=False)
            torch.testing.assert_close(shared_logits, whole_logits, rtol=0, atol=1e-5)
            assert (shared.shared is None) == (t >= 6)
        assert torch.equal(shared.memory, whole.memory) and torch.equal(shared.next_pieces, whole.next_pieces)
        assert torch.equal(shared.length, whole.length)
        read_logits, _ = model.read_rows(rows[:, :5], model.repeat_rows(narrow, 3))
        whole_read_logits, _ = model.read_rows(rows[:, :5], model.repeat_rows(state, 3))
        torch.testing.assert_close(read_logits, whole_read_logits, rtol=0, atol=1e-5)
        other = model.read(ids(read, seed=5))[1]
        stacked = model.stack_rows([narrow, other.narrowed(6)])  # rows of two texts: their whole rings
        assert stacked.shared is None and torch.equal(stacked.memory, torch.cat([state.memory, other.memory]))
        attending = model_with(BOTH)  # attention reads whole rings: they are made before the first step
        _, state = attending.read(ids(read))
        shared_logits, after = attending.step(rows[:, 0], attending.repeat_rows(state.narrowed(6), 3))
        whole_logits, _ = attending.step(rows[:, 0], attending.repeat_rows(state, 3))
    torch.testing.assert_close(shared_logits, whole_logits, rtol=0, atol=1e-5)
    assert after.shared is None


def test_a_cut_ring_grows_back_before_a_read_would_pass_its_end():
    """A row that reads more pieces than its cut ring holds (a search that goes deeper than expected) gets the
    whole ring back first, empty slots added, so it never wraps at the cut: the same figures as the whole
    ring, and the state after it the whole ring's."""
    model = model_with({"cache": {**CACHE["cache"], "window": 64}})
    with torch.inference_mode():
        _, state = model.read(ids(5))
        narrow = state.narrowed(4)
        assert narrow.memory.shape[1] == 9 and narrow.shared is None
        rows = torch.stack([ids(30, seed=3), ids(30, seed=4)])
        wide_logits, wide_state = model.read_rows(rows, model.repeat_rows(state, 2))
        narrow_logits, narrow_state = model.read_rows(rows, model.repeat_rows(narrow, 2))
        step_logits, step_state = model.step(rows[:, 0], model.repeat_rows(state.narrowed(0), 2))
        whole_step_logits, _ = model.step(rows[:, 0], model.repeat_rows(state, 2))
    torch.testing.assert_close(narrow_logits, wide_logits, rtol=0, atol=1e-5)
    assert narrow_state.memory.shape == wide_state.memory.shape
    torch.testing.assert_close(narrow_state.memory, wide_state.memory)
    assert torch.equal(narrow_state.next_pieces, wide_state.next_pieces)
    torch.testing.assert_close(step_logits, whole_step_logits, rtol=0, atol=1e-5)
    assert step_state.memory.shape[1] == 64


def test_a_state_with_memory_is_kept_and_found_by_the_prompt_cache():
    model = model_with(BOTH)
    prompt = ids(90, seed=7).tolist()
    cold_logits, cold_state = PromptCache(model).prefill(prompt)
    cache = PromptCache(model)
    cache.prefill(prompt[:50])
    warm_logits, warm_state = cache.prefill(prompt)
    again_logits, again_state = cache.prefill(prompt)
    assert cache.hits >= 1 and cache.whole_hits == 1
    assert torch.equal(warm_logits, cold_logits) and same_state(warm_state, cold_state)
    assert torch.equal(again_logits, cold_logits) and same_state(again_state, cold_state)


@pytest.fixture(scope="module")
def memory_checkpoint(tmp_path_factory, tokenizer):
    torch.manual_seed(11)
    model = LanguageModel(ModelConfig(vocab_size=tokenizer.vocab_size, layers=2, embedding_size=32, hidden_size=48,
                                      **BOTH))
    with torch.no_grad():
        model.decoder.bias[tokenizer.eos_id] = -1e4
    return save_checkpoint(tmp_path_factory.mktemp("memory") / "tiny-memory", model, tokenizer, {"corpus": "none"})


@pytest.mark.parametrize("threads, slice_tokens, company", [(2, 256, True), (1, 7, True), (None, 16, False)])
def test_seeded_results_with_memory_are_the_same_bits_whatever_the_threads_slices_or_company(
        memory_checkpoint, shakespeare_text, threads, slice_tokens, company):
    checkpoint = load_checkpoint(memory_checkpoint)
    request = GenerationRequest(shakespeare_text[:900], 20, SamplingParams(temperature=0.9, top_k=40, seed=7),
                                logprobs=2)
    neighbours = [GenerationRequest(shakespeare_text[i:i + 40], 12, SamplingParams(seed=i)) for i in range(0, 400, 50)]

    def tokens(threads, slice_tokens, company):
        engine = ModelEngine(checkpoint, max_batch_size=16, threads=threads, slice_tokens=slice_tokens)
        engine.start()

        async def go():
            others = [engine.submit(r) for r in neighbours] if company else []
            scores = [asyncio.ensure_future(engine.score(shakespeare_text[:2000]))] if company else []
            mine = await engine.submit(request).result()
            await asyncio.gather(*(s.result() for s in others), *scores)
            return [(t.id, t.logprob, t.top) for t in mine[0]], mine[1]

        try:
            return asyncio.run(go())
        finally:
            engine.stop()

    reference = tokens(1, 256, False)
    assert reference[1].completion_tokens == 20
    assert tokens(threads, slice_tokens, company) == reference


@pytest.mark.parametrize("direction", ["forward", "backward"])
def test_the_tuned_cache_scores_as_the_tuner_said(tmp_path, tokenizer, shakespeare_text, direction):
    """Whichever way the model reads (a backward model from the text's end), the tuner reads the text as scoring
    does, so the figure it reports for a setting is the one the text then scores."""
    model = LanguageModel(ModelConfig(vocab_size=tokenizer.vocab_size, layers=1, embedding_size=16,
                                      hidden_size=24, direction=direction)).eval()
    text = shakespeare_text[:2500] + shakespeare_text[:3000]  # a text that repeats itself: the cache must help
    best, figures = tune(model, tokenizer, text, windows=(64, 256), thetas=(0.5, 2.0), lambdas=(0.1, 0.3),
                         match_cosines=(0.9, 0.99), match_lambdas=(0.5, 0.8), log=lambda line: None)
    assert best.lam > 0 and figures["nats_per_char_best"] < figures["nats_per_char_off"]
    assert best.match_lam > 0  # the second reading of the text matches the first
    path = save_checkpoint(tmp_path / "tuned", model, tokenizer, {"corpus": "none"})
    save_cache_settings(path, best, figures)
    tuned = load_checkpoint(path)
    assert tuned.model.config.cache == best
    off = score_text(model, tokenizer, text).metrics()
    assert off["nats_per_char"] == pytest.approx(figures["nats_per_char_off"], rel=1e-6)
    score = score_text(tuned.model, tuned.tokenizer, text).metrics()
    assert score["nats_per_char"] == pytest.approx(figures["nats_per_char_best"], rel=1e-6)
    assert json.loads((path / "cache_tuning.json").read_text())["best"] == dataclasses.asdict(best)


def test_the_tuner_counts_only_the_window_before_each_position(tokenizer):
    keys = torch.eye(6)
    pieces = torch.tensor([5, 1, 2, 1, 2, 1, 2])  # position t predicts pieces[t + 1]
    keys[4] = keys[1] + 0.5 * keys[2]
    found, closeness = cache_probabilities(keys, pieces, window=3, theta=0.0)  # theta 0: every slot weighs the same
    # position 3 predicts 2; the window (0, 2] holds positions 1 and 2, followed by 1 and 2: half of it is 2
    assert found[0] == 0 and found[3] == pytest.approx(0.5)
    # the closest key to position 4 among positions 2 and 3 (position 1 is out of its window)
    assert closeness[0] == -1 and closeness[4] == pytest.approx(0.5 / 1.25 ** 0.5)


def test_an_interrupted_memory_run_resumes_with_the_losses_of_one_that_never_stopped(tmp_path, corpus):
    """The memory is carried from chunk to chunk like the recurrent state, saved with it, and restored."""
    import signal
    import subprocess
    import sys
    import time

    from lyricist.model.checkpoint import MANIFEST_FILE

    from .test_training import train_losses

    def train(out, *more):
        args = ["train", "--corpus", str(corpus), "--out", str(out), "--set", "model.vocab_size=400",
                "--set", "model.hidden_size=24", "--set", "model.embedding_size=16", "--set", "optim.batch_size=4",
                "--set", "optim.bptt=12", "--set", "run.samples_in_card=0", "--set", "run.threads=1",
                "--set", "model.attention.window=16", "--set", "run.dynamic_stats_chars=0",
                "--set", "optim.max_steps=30", "--set", "run.checkpoint_every_minutes=0.0001", *more]
        return subprocess.Popen([sys.executable, "-m", "lyricist.model.cli", *args], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

    whole = train(tmp_path / "whole")
    assert whole.wait(timeout=300) == 0
    out = tmp_path / "interrupted"
    process = train(out)
    deadline = time.monotonic() + 120
    while not (out / MANIFEST_FILE).exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.3)
    process.send_signal(signal.SIGINT)
    process.communicate(timeout=120)
    stopped_at = load_checkpoint(out).training["steps"]
    assert 0 < stopped_at < 30, "the interruption should land mid-run"
    resumed = train(out, "--resume")
    _, stderr = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, stderr
    assert train_losses(out) == train_losses(tmp_path / "whole")
    assert load_checkpoint(out).model.config.attention.window == 16


def test_writing_leaves_the_cache_out_and_reading_mixes_it_in(tmp_path, tokenizer, shakespeare_text):
    """The cache is for reading given text. Whatever writes — a generation (the plain loop and the engine, its
    prompt included) and a line search — samples from the model's own distribution: its samples and logprobs
    are those of the same weights with the cache off, while a score of the same text is the mixture's."""
    from lyricist.model.generation import generate
    from lyricist.songwriting.lines import generate_lines
    from lyricist.songwriting.tasks import lexicon

    torch.manual_seed(4)
    with_cache = LanguageModel(ModelConfig(vocab_size=tokenizer.vocab_size, layers=2, embedding_size=32,
                                           hidden_size=48, **CACHE)).eval()
    without = LanguageModel(ModelConfig(vocab_size=tokenizer.vocab_size, layers=2, embedding_size=32,
                                        hidden_size=48, cache={"window": 16})).eval()  # the same ring, λ = 0
    without.load_state_dict(with_cache.state_dict())
    prompt = shakespeare_text[:300]
    params = SamplingParams(temperature=1.0, seed=3)
    written = "".join(generate(with_cache, tokenizer, prompt, 40, params))
    assert written == "".join(generate(without, tokenizer, prompt, 40, params))
    mixed, plain = score_text(with_cache, tokenizer, prompt + written), score_text(without, tokenizer, prompt + written)
    assert not torch.equal(mixed.logprobs, plain.logprobs)  # reading: the mixture

    lines = [generate_lines(m, tokenizer, lexicon(), prompt, n=2, syllables=6, params=SamplingParams(seed=5)).lines
             for m in (with_cache, without)]
    assert [(l.text, l.logprob) for l in lines[0]] == [(l.text, l.logprob) for l in lines[1]]

    served = []
    for name, model in (("cached", with_cache), ("plain", without)):
        save_checkpoint(tmp_path / name, model, tokenizer, {"corpus": "none"})
        engine = ModelEngine(load_checkpoint(tmp_path / name), max_batch_size=4, threads=1)
        engine.start()

        async def go():
            request = GenerationRequest(prompt, 16, SamplingParams(temperature=0.9, seed=8), logprobs=2)
            tokens, _ = await engine.submit(request).result()
            return [(t.id, t.logprob, t.top) for t in tokens]

        try:
            served.append(asyncio.run(go()))
        finally:
            engine.stop()
    assert served[0] == served[1]


def test_the_prompt_cache_keeps_reading_and_writing_outcomes_apart():
    model = model_with(CACHE)
    prompts = PromptCache(model)
    text = [1, *ids(40, seed=9).tolist()]
    read, read_state = prompts.prefill(text)
    written, written_state = prompts.prefill(text, mix_cache=False)
    assert read_state.memory is not None and written_state.memory is None  # writing keeps no ring: no reader
    with torch.inference_mode():
        assert torch.equal(written, model.read(torch.tensor(text), mix_cache=False)[0])
        assert torch.equal(read, model.read(torch.tensor(text))[0])
    assert not torch.equal(read, written)
    assert torch.equal(prompts.prefill(text)[0], read) and torch.equal(prompts.prefill(text, mix_cache=False)[0],
                                                                        written)


def test_a_stream_that_writes_keeps_no_ring_unless_attention_reads_it():
    cache_only, with_attention = model_with(CACHE), model_with(BOTH)
    prompt = torch.tensor([1, *ids(30, seed=4).tolist()])
    with torch.inference_mode():
        _, written = cache_only.read(prompt, mix_cache=False)
        assert written.memory is None
        with pytest.raises(ValueError, match="keeps no memory"):
            cache_only.read(prompt, written)  # reading needs the past it did not keep
        assert with_attention.read(prompt, mix_cache=False)[1].memory is not None
