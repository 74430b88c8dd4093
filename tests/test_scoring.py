import math

import pytest
import torch

import lyricist.model.scoring as scoring
from lyricist.model.scoring import score_text

from .helpers import tiny_model


def test_the_figure_does_not_depend_on_how_the_text_is_cut(tokenizer, shakespeare_text):
    # The state is carried through the whole text, and any cut into calls of at least 2 pieces reads it as one
    # pass does, so reading it 1024, 256 or 7 pieces at a time gives the same log-probabilities, to the bit.
    model = tiny_model(tokenizer.vocab_size, seed=4).eval()
    text = shakespeare_text[:3000]
    whole = score_text(model, tokenizer, text, slice_tokens=100_000)
    for slice_tokens in (1024, 256, 7, 4):
        cut = score_text(model, tokenizer, text, slice_tokens)
        assert cut.token_ids == whole.token_ids == tokenizer.encode(text)
        assert torch.equal(cut.logprobs, whole.logprobs), slice_tokens


def test_the_slices_follow_the_time_a_step_is_given_and_change_no_figure(tokenizer, shakespeare_text):
    # The engine sends each step of a reading the seconds it may take (beside running streams): the slices are
    # then as long as that allows at the rate the last one was read (model.steps.Pace), within the limit asked
    # for, and the figures stay those of one pass.
    model = tiny_model(tokenizer.vocab_size, seed=4).eval()
    text = shakespeare_text[:6000]
    whole = score_text(model, tokenizer, text, slice_tokens=100_000)
    for seconds, allowed in ((1e-7, range(3, 5)), (1e9, range(200, 201))):
        sizes = []
        reading = scoring.read_score(model, tokenizer, text, slice_tokens=200,
                                     observe=lambda logits, sizes=sizes: sizes.append(len(logits)))
        next(reading)
        try:
            while True:
                reading.send(seconds)
        except StopIteration as done:
            cut = done.value
        assert torch.equal(cut.logprobs, whole.logprobs), seconds
        assert sizes[0] == 200 and sum(sizes) == len(whole.token_ids)  # the first step: a whole slice
        assert all(size in allowed for size in sizes[1:-1]), sizes  # the last is what is left


def test_a_long_text_is_scored_in_memory_bounded_by_the_slice(tokenizer, shakespeare_text):
    # No tensor of tokens x vocabulary for the whole text: each slice's logits are the largest a score makes.
    model = tiny_model(tokenizer.vocab_size, seed=4).eval()
    text = shakespeare_text[:20000]
    shapes = []
    score = score_text(model, tokenizer, text, slice_tokens=256, observe=lambda logits: shapes.append(logits.shape))
    assert len(score.token_ids) > 4 * 256
    assert max(rows for rows, _ in shapes) <= 256 and sum(rows for rows, _ in shapes) == len(score.token_ids)
    assert len(shapes) == -(-len(score.token_ids) // 256)  # one call a slice
    assert scoring.SLICE_TOKENS * tokenizer.vocab_size * 8 < 16 * 2**20  # the default slice: a few MB a step


def test_metrics_are_consistent(tokenizer):
    model = tiny_model(tokenizer.vocab_size, seed=5).eval()
    text = "First Citizen:\nBefore we proceed any further, hear me speak.\n"
    figures = score_text(model, tokenizer, text).metrics()
    assert figures["chars"] == len(text) and figures["tokens"] == len(tokenizer.encode(text))
    assert figures["nats_per_char"] == pytest.approx(figures["nll"] / len(text))
    assert figures["bits_per_char"] == pytest.approx(figures["nats_per_char"] / math.log(2))
    assert figures["perplexity"] == pytest.approx(math.exp(figures["nll"] / figures["tokens"]))
    assert figures["words"] == 15  # First Citizen : \n Before we proceed any further , hear me speak . \n
    assert figures["word_perplexity"] == pytest.approx(math.exp(figures["nll"] / 15))


def test_figures_of_a_hopeless_text_stay_finite(tiny_checkpoint):
    """One long word the model finds very unlikely passes 709 nats, past what exp() can hold."""
    from lyricist.model import load_checkpoint
    from lyricist.model.scoring import score_text

    ckpt = load_checkpoint(tiny_checkpoint)
    score = score_text(ckpt.model, ckpt.tokenizer, "7" * 400)
    figures = score.metrics()
    assert figures["nll"] / figures["words"] > 709
    assert all(math.isfinite(value) for value in figures.values())


def test_scoring_runs_without_dropout_and_leaves_the_mode_it_found(tokenizer):
    model = tiny_model(tokenizer.vocab_size, dropout={"input": 0.5, "output": 0.5, "weight": 0.5}, seed=6)
    text = "ROMEO:\nBut soft, what light"
    want = score_text(model.eval(), tokenizer, text).logprobs
    assert torch.equal(score_text(model.train(), tokenizer, text).logprobs, want) and model.training


def test_a_texts_pieces_as_tokens_join_to_it_with_no_replacement_characters(tokenizer):
    model = tiny_model(tokenizer.vocab_size, seed=7).eval()
    text = "Ça va? 你好 🎸"
    scored = score_text(model, tokenizer, text)
    tokens = tokenizer.token_texts(scored.token_ids)
    assert "".join(t.text for t in tokens) == text and len(tokens) == len(scored.logprobs)
    assert [list(t.data) for t in tokens][-4:] == [[0xF0], [0x9F], [0x8E], [0xB8]]
    assert [t.text for t in tokens][-4:] == ["", "", "", "🎸"]


@pytest.mark.parametrize("memory", [{}, {"attention": {"window": 12}},
                                    {"attention": {"window": 12}, "cache": {"window": 20, "theta": 0.5, "lam": 0.2}},
                                    {"cache": {"window": 512, "theta": 0.5, "lam": 0.2, "match_cosine": 0.5,
                                               "match_lam": 0.6}}])
def test_texts_sharing_a_beginning_are_scored_as_each_alone(tokenizer, memory):
    """read_prefix reads the shared beginning once and read_continuations every text's own pieces side by side
    (the alternatives for a part of a line): each total is the text's own score, with or without the memory,
    with a ring that wraps while they are read and with one cut to the slots they use (`State.narrowed`)."""
    from lyricist.model.network import LanguageModel, ModelConfig
    from lyricist.model.steps import run_to_end

    torch.manual_seed(3)
    model = LanguageModel(ModelConfig(vocab_size=tokenizer.vocab_size, layers=2, embedding_size=12, hidden_size=16,
                                      **memory)).eval()
    before = "KING:\nWhat say you, friends?\n"
    endings = ["Speak!", "We say the king is wise, and he shall have our voices.", "No", "Aye, aye, my lord.\n"]
    head = tokenizer.encode(before, add_bos=True)
    prefix_logprob, logits, state = run_to_end(scoring.read_prefix(model, head, slice_tokens=5))
    totals = run_to_end(scoring.read_continuations(model, logits, state, [tokenizer.encode(e) for e in endings]))
    for ending, total in zip(endings, totals):
        assert tokenizer.encode(before) + tokenizer.encode(ending) == tokenizer.encode(before + ending)
        alone = score_text(model, tokenizer, before + ending)
        assert prefix_logprob + total == pytest.approx(float(alone.logprobs.double().sum()), abs=1e-4), ending
