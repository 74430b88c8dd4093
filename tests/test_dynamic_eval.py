"""Dynamic evaluation: it adapts to the text, never touches the model, and is static scoring when it takes no step."""

import dataclasses
import json
import math

import pytest
import torch

from lyricist.model import load_checkpoint, save_checkpoint
from lyricist.model.checkpoint import MANIFEST_FILE, read_extra_file
from lyricist.model.cli import main as lyricist_main
from lyricist.model.dynamic_eval import (
    STATS_FILE,
    DynamicEvaluator,
    DynamicSettings,
    dynamic_score,
    gradient_statistics,
    mean_squares,
    read_statistics,
    save_statistics,
)
from lyricist.model.scoring import score_text

from .helpers import tiny_model

REPETITIVE = "To be, or not to be, that is the question.\n" * 25
# A random tiny model's gradients are far from a trained one's: a large relative ε keeps its steps sane.
ADAPT = DynamicSettings(segment=10, lr=3e-3, decay=0.0, eps=1.0)


@pytest.fixture(scope="module")
def model(tokenizer):
    return tiny_model(tokenizer.vocab_size, embedding_size=24, hidden_size=24, seed=5,
                      dropout=dict(input=0.3, output=0.3, weight=0.3))


@pytest.fixture(scope="module")
def stats(model, tokenizer, shakespeare_text):
    return gradient_statistics(model, tokenizer, shakespeare_text[:3000], segment=10)


def weights(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_it_learns_a_repetitive_text_and_leaves_the_model_as_it_was(model, tokenizer, stats):
    before = weights(model)
    model.train()  # dropout on: dynamic evaluation must turn it off on its copy, and leave the mode alone
    static = score_text(model, tokenizer, REPETITIVE).metrics()
    dynamic = dynamic_score(model, tokenizer, REPETITIVE, stats, ADAPT)
    figures = dynamic.metrics()
    assert figures["nll"] < 0.8 * static["nll"]
    assert {k: figures[k] for k in ("chars", "tokens", "words")} == {k: static[k] for k in ("chars", "tokens", "words")}
    # Each piece is predicted before any step has seen it: the first segment scores as static scoring does.
    assert dynamic.logprobs[:10].tolist() == pytest.approx(score_text(model, tokenizer, REPETITIVE).logprobs[:10]
                                                           .tolist(), rel=1e-5)
    assert model.training
    after = weights(model)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in model.parameters())


def test_without_steps_it_is_static_scoring(model, tokenizer, stats, shakespeare_text):
    text = shakespeare_text[5000:5800]
    static = score_text(model, tokenizer, text).metrics()
    for segment in (1, 7, 64):
        figures = dynamic_score(model, tokenizer, text, stats, DynamicSettings(segment=segment, lr=0.0,
                                                                              decay=0.0)).metrics()
        assert figures.keys() == static.keys()
        for key, value in static.items():
            assert figures[key] == pytest.approx(value, rel=1e-6), key


def test_decay_alone_changes_nothing_either(model, tokenizer, stats, shakespeare_text):
    # With η = 0 the weights never leave θ₀, so the pull back to θ₀ has nothing to undo.
    text = shakespeare_text[:1500]
    static = score_text(model, tokenizer, text).metrics()["nll"]
    assert dynamic_score(model, tokenizer, text, stats, DynamicSettings(lr=0.0, decay=0.5)).metrics()["nll"] == \
        pytest.approx(static, rel=1e-6)


def test_a_strong_decay_keeps_the_weights_near_the_trained_ones(model, tokenizer, stats):
    free = dynamic_score(model, tokenizer, REPETITIVE, stats, ADAPT)
    held = dynamic_score(model, tokenizer, REPETITIVE, stats, dataclasses.replace(ADAPT, decay=0.9))
    static = score_text(model, tokenizer, REPETITIVE).metrics()["nll"]
    assert free.nll < held.nll < static


def test_factored_statistics_approximate_the_full_ones(model, tokenizer, shakespeare_text, stats):
    full = gradient_statistics(model, tokenizer, shakespeare_text[:3000], segment=10, factored=False)
    assert set(full) == {name for name, _ in model.named_parameters()}
    assert "embedding.weight.rows" in stats and "embedding.weight" not in stats
    rebuilt = mean_squares(model, stats)
    for name, param in model.named_parameters():
        assert rebuilt[name].shape == param.shape and (rebuilt[name] >= 0).all()
        # a rank-one estimate keeps the totals of rows and columns
        if param.dim() == 2:
            torch.testing.assert_close(rebuilt[name].mean(1), full[name].mean(1), rtol=1e-4, atol=1e-12)
        else:
            torch.testing.assert_close(rebuilt[name], full[name])


def test_statistics_for_another_model_are_refused(tokenizer, stats):
    other = tiny_model(tokenizer.vocab_size, embedding_size=24, hidden_size=32)
    with pytest.raises(ValueError, match="another model"):
        DynamicEvaluator(other, tokenizer, stats)


@pytest.mark.parametrize("settings", [dict(segment=0), dict(lr=-1.0), dict(decay=1.5), dict(lr=float("nan"))])
def test_impossible_settings_are_refused(settings):
    with pytest.raises(ValueError):
        DynamicSettings(**settings)


def test_the_checkpoint_carries_the_statistics_and_eval_reports_a_dynamic_figure(
        model, tokenizer, stats, shakespeare_text, tmp_path, capsys):
    directory = save_checkpoint(tmp_path / "ck", model, tokenizer, {"corpus": "x"}, {"README.md": b"card"})
    (tmp_path / "text.txt").write_text(REPETITIVE, encoding="utf-8")
    (tmp_path / "train.txt").write_text(shakespeare_text[:3000], encoding="utf-8")
    base = ["eval", "--model", str(directory), "--text", str(tmp_path / "text.txt"), "--threads", "1"]

    assert lyricist_main(base) == 0
    static = json.loads(capsys.readouterr().out)
    assert "evaluation" not in static
    assert lyricist_main([*base, "--dynamic"]) == 1  # no statistics yet, and none to compute them on
    assert "--stats-text" in capsys.readouterr().err
    assert lyricist_main([*base, "--segment", "5"]) == 1  # a dynamic setting without --dynamic
    capsys.readouterr()

    args = [*base, "--dynamic", "--segment", "10", "--lr", "3e-3", "--decay", "0", "--eps", "1"]
    assert lyricist_main([*args, "--stats-text", str(tmp_path / "train.txt"), "--save-stats"]) == 0
    computed = json.loads(capsys.readouterr().out)
    assert computed["evaluation"] == "dynamic"
    assert computed["dynamic"]["segment"] == 10 and computed["dynamic"]["lr"] == 3e-3
    assert computed["nll"] < 0.8 * static["nll"]
    assert static.keys() <= computed.keys()

    # Saved: the other files kept, the settings stored, and the same figure without the training text.
    files = json.loads((directory / MANIFEST_FILE).read_text())["files"]
    assert STATS_FILE in files and read_extra_file(directory, "README.md") == b"card"
    saved, info = read_statistics(directory)
    assert info["settings"]["segment"] == 10 and set(saved) == set(stats)
    assert lyricist_main([*base, "--dynamic"]) == 0
    stored = json.loads(capsys.readouterr().out)
    assert stored["nll"] == pytest.approx(computed["nll"], rel=1e-6)
    assert (stored["dynamic"]["lr"], stored["dynamic"]["eps"], stored["dynamic"]["statistics"]["chars"]) == \
        (3e-3, 1.0, 3000)

    # What the service calls: one evaluator per model, a copy of the weights per text.
    checkpoint = load_checkpoint(directory)
    evaluator = DynamicEvaluator.from_checkpoint(checkpoint)
    before = weights(checkpoint.model)
    assert evaluator.score(REPETITIVE).nll == pytest.approx(computed["nll"], rel=1e-6)
    assert evaluator.score("").metrics()["tokens"] == 0
    assert all(torch.equal(before[k], v) for k, v in weights(checkpoint.model).items())


def test_saving_statistics_of_another_model_is_refused(tokenizer, tmp_path, stats):
    other = tiny_model(tokenizer.vocab_size, embedding_size=16, hidden_size=16)
    directory = save_checkpoint(tmp_path / "other", other, tokenizer)
    with pytest.raises(ValueError, match="another model"):
        save_statistics(directory, stats, DynamicSettings())
    assert STATS_FILE not in json.loads((directory / MANIFEST_FILE).read_text())["files"]


def test_a_finished_training_run_keeps_the_statistics_for_the_service(shakespeare_text, tmp_path, capsys):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(shakespeare_text[:30_000], encoding="utf-8")
    out = tmp_path / "run"
    settings = ["model.vocab_size=400", "model.hidden_size=16", "model.embedding_size=16", "optim.batch_size=8",
                "optim.bptt=16", "optim.max_steps=5", "run.samples_in_card=0", "run.threads=1",
                "run.dynamic_stats_chars=2000"]
    assert lyricist_main(["train", "--corpus", str(corpus), "--out", str(out),
                          *[a for s in settings for a in ("--set", s)]]) == 0
    stats, info = read_statistics(out)
    assert info["about"]["chars"] == 2000 and info["settings"] == DynamicSettings().to_dict()
    checkpoint = load_checkpoint(out)
    mean_squares(checkpoint.model, stats)  # they fit the model the checkpoint holds
    (tmp_path / "valid.txt").write_text(shakespeare_text[27_000:30_000], encoding="utf-8")
    capsys.readouterr()
    assert lyricist_main(["eval", "--model", str(out), "--text", str(tmp_path / "valid.txt"), "--dynamic"]) == 0
    figures = json.loads(capsys.readouterr().out)
    assert figures["evaluation"] == "dynamic" and math.isfinite(figures["nats_per_char"])
