"""lyricist train / eval: real runs of tiny models on a slice of tiny shakespeare."""

import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from lyricist.model import load_checkpoint
from lyricist.model.checkpoint import MANIFEST_FILE, read_extra_file
from lyricist.model.cli import main as lyricist_main
from lyricist.training.config import OptimSettings, TrainConfig, load_config
from lyricist.training.data import VALIDATION_FRACTION, read_corpus
from lyricist.training.objective import bf16_runs_on
from lyricist.training.run_state import LOG_FILE
from lyricist.training.scheduled_sampling import teacher_forcing_probability
from lyricist.training.trainer import Trainer

from .helpers import SHAKESPEARE

TINY = [
    "model.vocab_size=400", "model.hidden_size=32", "model.embedding_size=16", "optim.batch_size=8",
    "optim.bptt=16", "optim.warmup_steps=5", "run.log_every_steps=1", "run.eval_every_steps=10",
    "run.samples_in_card=1", "run.threads=1",
]



def train_args(corpus, out, *settings):
    args = ["train", "--corpus", str(corpus), "--out", str(out)]
    for setting in [*TINY, *settings]:
        args += ["--set", setting]
    return args


def train_losses(out) -> list[float]:
    return [e["loss"] for e in read_log(out) if e["event"] == "train"]


def read_log(out) -> list[dict]:
    return [json.loads(line) for line in read_extra_file(out, LOG_FILE).decode().splitlines()]


@pytest.fixture(scope="module")
def finished_run(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "tiny"
    assert lyricist_main(train_args(corpus, out, "optim.max_steps=30")) == 0
    return out


def test_a_run_leaves_a_checkpoint_card_log_and_plot(finished_run):
    checkpoint = load_checkpoint(finished_run)
    facts = checkpoint.training
    assert facts["finished"] and facts["steps"] == 30 and facts["corpus"] == "shakespeare-slice"
    assert facts["val_nats_per_char"] == min(e["val"]["nats_per_char"] for e in read_log(finished_run)
                                             if e["event"] == "eval")
    losses = train_losses(finished_run)
    assert len(losses) == 30 and losses[-1] < losses[0]
    assert read_extra_file(finished_run, "training.png").startswith(b"\x89PNG")
    card = read_extra_file(finished_run, "README.md").decode()
    assert "nats_per_char" in card and "Samples" in card and "hardware" in card
    # A finished run keeps only the model: no optimizer state to carry around.
    assert "trainer_state.safetensors" not in json.loads((finished_run / MANIFEST_FILE).read_text())["files"]


def test_eval_prints_the_figures_of_the_validation_text(finished_run, corpus, tmp_path, capsys):
    text = read_corpus(corpus).validation_text
    (tmp_path / "val.txt").write_text(text, encoding="utf-8")
    capsys.readouterr()
    assert lyricist_main(["eval", "--model", str(finished_run), "--text", str(tmp_path / "val.txt")]) == 0
    figures = json.loads(capsys.readouterr().out)
    assert set(figures) >= {"nll", "chars", "tokens", "nats_per_char", "bits_per_char", "perplexity",
                            "word_perplexity"}
    assert figures["chars"] == len(text)
    assert figures["nats_per_char"] == pytest.approx(figures["nll"] / len(text))
    assert figures["bits_per_char"] == pytest.approx(figures["nats_per_char"] / math.log(2))
    assert figures["perplexity"] == pytest.approx(math.exp(figures["nll"] / figures["tokens"]))
    last_eval = [e for e in read_log(finished_run) if e["event"] == "eval"][-1]["val"]
    best = load_checkpoint(finished_run).training["val"]
    assert figures["nats_per_char"] == pytest.approx(best["nats_per_char"], rel=1e-9) or \
        figures["nats_per_char"] == pytest.approx(last_eval["nats_per_char"], rel=1e-9)


def test_same_seed_same_model_other_seed_other_model(corpus, tmp_path, finished_run):
    assert lyricist_main(train_args(corpus, tmp_path / "again", "optim.max_steps=30")) == 0
    assert train_losses(tmp_path / "again") == train_losses(finished_run)
    assert lyricist_main(train_args(corpus, tmp_path / "other", "optim.max_steps=30", "seed=7")) == 0
    assert train_losses(tmp_path / "other") != train_losses(finished_run)


def run_cli(*args, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "lyricist.model.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)


@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
def test_interrupted_and_resumed_run_has_the_losses_of_one_that_never_stopped(corpus, tmp_path, finished_run, how):
    out = tmp_path / "interrupted"
    # Checkpoints every step or so, so the interruption can land anywhere.
    process = run_cli(*train_args(corpus, out, "optim.max_steps=30", "run.checkpoint_every_minutes=0.0001"))
    deadline = time.monotonic() + 120
    while not (out / MANIFEST_FILE).exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.3)
    process.send_signal(how)
    stdout, stderr = process.communicate(timeout=120)
    if how == signal.SIGKILL:
        assert process.returncode == -signal.SIGKILL
    else:
        assert process.returncode == 0, stderr
        assert "--resume" in stderr and "Traceback" not in stderr
    stopped_at = load_checkpoint(out).training["steps"]
    assert 0 < stopped_at < 30, "the interruption should land mid-run"

    resumed = run_cli(*train_args(corpus, out, "optim.max_steps=30", "run.checkpoint_every_minutes=0.0001"),
                      "--resume")
    _, stderr = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, stderr
    assert train_losses(out) == train_losses(finished_run)
    assert load_checkpoint(out).training["finished"]


def test_max_minutes_ends_the_run_with_a_checkpoint(corpus, tmp_path):
    start = time.monotonic()
    assert lyricist_main(train_args(corpus, tmp_path / "timed", "optim.max_steps=100000") + ["--max-minutes",
                                                                                               "0.05"]) == 0
    assert time.monotonic() - start < 60
    facts = load_checkpoint(tmp_path / "timed").training
    assert facts["finished"] and facts["stop_reason"] == "budget reached"
    assert 0.04 < facts["train_minutes"] < 0.2


def test_a_checkpoint_is_never_overwritten_by_a_new_run(finished_run, corpus, capsys):
    before = (finished_run / "model.safetensors").read_bytes()
    assert lyricist_main(train_args(corpus, finished_run, "optim.max_steps=5")) == 1
    assert "already holds a checkpoint" in capsys.readouterr().err
    assert (finished_run / "model.safetensors").read_bytes() == before
    assert lyricist_main(train_args(corpus, finished_run, "optim.max_steps=5") + ["--resume"]) == 1
    assert "has finished" in capsys.readouterr().err


@pytest.mark.parametrize("line_break", ["\r\n", "\r"])
def test_a_corpus_saved_with_windows_or_old_mac_line_breaks_trains_as_its_lf_copy(corpus, tmp_path, line_break):
    typed = tmp_path / "shakespeare-slice.txt"  # the same name: the checkpoint records the corpus's name
    typed.write_bytes(corpus.read_bytes().replace(b"\n", line_break.encode()))
    assert read_corpus(typed).text == read_corpus(corpus).text
    runs = {}
    for name, path in (("lf", corpus), ("typed", typed)):
        assert lyricist_main(train_args(path, tmp_path / name, "optim.max_steps=3", "run.eval_every_steps=3")) == 0
        runs[name] = load_checkpoint(tmp_path / name)
    assert runs["typed"].tokenizer.piece_texts == runs["lf"].tokenizer.piece_texts
    lf_weights, typed_weights = runs["lf"].model.state_dict(), runs["typed"].model.state_dict()
    assert all(torch.equal(typed_weights[name], weights) for name, weights in lf_weights.items())
    assert runs["typed"].training["corpus_sha256"] != runs["lf"].training["corpus_sha256"]  # the file's own


@pytest.mark.parametrize("content, message", [
    (b"", "is empty"), (b"   \n\n", "is empty"), (b"\x89PNG\r\n\x1a\n\x00\x00\x00", "looks binary"),
    ("caf\u00e9".encode("latin-1") * 100, "not UTF-8"), (b"to be or not to be\n" * 20, "too small"),
])
def test_bad_corpus_stops_before_training_with_one_message(tmp_path, capsys, content, message):
    corpus = tmp_path / "corpus.txt"
    corpus.write_bytes(content)
    assert lyricist_main(train_args(corpus, tmp_path / "out", "optim.batch_size=64")) == 1
    error = capsys.readouterr().err
    assert message in error and error.count("\n") == 1
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("setting, message", [
    ("model.cell=tcn", "cell must be one of"), ("optim.lr=-1", "optim.lr must be > 0"),
    ("optim.optimizer=rmsprop", "optim.optimizer must be one of"), ("optim.colour=3", "unknown config key"),
    ("model.dropout.weight=1.5", "dropout.weight must be in [0, 1)"), ("optim.bptt=2", "at least 5"),
    ("run.device=tpu", "run.device must be"), ("run.precision=fp8", "run.precision must be one of fp32, bf16"),
    ("optim.rename_speakers=2", "optim.rename_speakers must be in [0, 1]"),
    *([] if torch.cuda.is_available() else [("run.device=cuda", "no CUDA GPU is available")]),
])
def test_impossible_config_stops_before_training(corpus, tmp_path, capsys, setting, message):
    assert lyricist_main(train_args(corpus, tmp_path / "out", setting)) == 1
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_config_file_and_flags_layer_over_the_defaults(tmp_path):
    (tmp_path / "c.toml").write_text('seed = 5\n[optim]\nlr = 0.01\nbatch_size = 16\n[model.dropout]\nweight = 0.1\n')
    config = load_config(tmp_path / "c.toml", ["optim.lr=0.02"])
    assert (config.seed, config.optim.lr, config.optim.batch_size, config.model.dropout.weight) == (5, 0.02, 16, 0.1)
    assert config.optim.clip == TrainConfig().optim.clip


def test_a_short_budget_starts_from_the_short_preset_and_what_the_user_sets_still_wins(tmp_path):
    from lyricist.model.network import ModelConfig
    from lyricist.training.config import SHORT_BUDGET, SHORT_BUDGET_MINUTES, fine_tuning_defaults

    defaults = TrainConfig()
    short = load_config(None, ["optim.max_minutes=10"])
    assert short.preset == "short" and short.optim.lr == SHORT_BUDGET["optim"]["lr"] != defaults.optim.lr
    assert {k: getattr(short.model.dropout, k) for k in SHORT_BUDGET["model"]["dropout"]} == \
        SHORT_BUDGET["model"]["dropout"]
    assert short.optim.batch_size == defaults.optim.batch_size  # the rest are the defaults
    (tmp_path / "c.toml").write_text("[model.dropout]\nweight = 0.3\n")
    mine = load_config(tmp_path / "c.toml", ["optim.max_minutes=10", "optim.lr=0.001"])
    assert (mine.preset, mine.optim.lr, mine.model.dropout.weight, mine.model.dropout.output) == ("short", 0.001, 0.3, 0.1)
    for settings in (["optim.max_minutes=80"], [], [f"optim.max_minutes={SHORT_BUDGET_MINUTES}", "preset=default"]):
        config = load_config(None, settings)
        assert config.preset == "default" and config.optim.lr == defaults.optim.lr, settings
        assert config.model.dropout == defaults.model.dropout
    assert load_config(None, ["optim.max_minutes=80", "preset=short"]).optim.lr == SHORT_BUDGET["optim"]["lr"]
    tuned = load_config(None, ["optim.max_minutes=3"], base=fine_tuning_defaults(ModelConfig()))
    assert tuned.preset == "fine-tuning" and tuned.optim.lr == 1e-3  # a fine-tune keeps its own preset
    resumed = load_config(None, ["optim.max_minutes=5"], base=load_config(None, ["optim.max_minutes=80"]))
    assert resumed.preset == "default" and resumed.optim.lr == defaults.optim.lr  # a resumed run keeps its own
    with pytest.raises(ValueError, match="preset must be one of"):
        load_config(None, ["preset=quick"])


def test_teacher_forcing_schedules():
    def probabilities(**settings):
        o = OptimSettings(**settings)
        return [teacher_forcing_probability(o, step) for step in (0, 100, 1000, 10000)]

    assert probabilities() == [1.0] * 4
    assert probabilities(scheduled_sampling="linear", ss_k=1.0, ss_c=1e-4, ss_min=0.5) == \
        pytest.approx([1.0, 0.99, 0.9, 0.5])
    exponential = probabilities(scheduled_sampling="exponential", ss_k=0.999, ss_min=0.0)
    assert exponential == pytest.approx([1.0, 0.999**100, 0.999**1000, 0.999**10000])
    sigmoid = probabilities(scheduled_sampling="inverse_sigmoid", ss_k=200.0, ss_min=0.1)
    assert sigmoid[0] > sigmoid[1] > sigmoid[2] > 0.1 == sigmoid[3]


def test_scheduled_sampling_and_nt_asgd_train(corpus, tmp_path):
    out = tmp_path / "variants"
    args = train_args(corpus, out, "optim.max_steps=40", "optim.scheduled_sampling=linear", "optim.ss_c=0.02",
                      "optim.ss_min=0.3", "optim.optimizer=nt-asgd", "optim.lr=20", "optim.nonmono=1",
                      "optim.schedule=constant", "run.eval_every_steps=4")
    assert lyricist_main(args) == 0
    log = read_log(out)
    losses = train_losses(out)
    assert all(math.isfinite(x) for x in losses) and losses[-1] < losses[0]
    assert any(e["event"] == "averaging_started" for e in log)


@pytest.mark.skipif(not bf16_runs_on("cpu"), reason="this CPU runs no LSTM in bfloat16 (no AVX512-BF16 or AMX)")
def test_bf16_runs_the_products_in_bfloat16_and_keeps_everything_stored_in_float32(corpus, tmp_path):
    def first_steps(precision: str):
        config = load_config(None, [*TINY, f"run.precision={precision!r}"])
        trainer = Trainer(read_corpus(corpus), tmp_path / precision, config, "")
        seen = []
        trainer.model.decoder.register_forward_hook(lambda _module, _inputs, output: seen.append(output.dtype))
        losses = [trainer._step() for _ in range(5)]
        return trainer, losses, set(seen)

    full, full_losses, full_dtypes = first_steps("fp32")
    half, half_losses, half_dtypes = first_steps("bf16")
    assert full_dtypes == {torch.float32} and half_dtypes == {torch.bfloat16}
    assert all(p.dtype == torch.float32 for p in half.model.parameters()) and half.state.rnn.dtype == torch.float32
    # The same seed and data: the same course, to bfloat16's rounding.
    assert half_losses != full_losses and half_losses == pytest.approx(full_losses, rel=0.01)
    assert half_losses[-1] < half_losses[0]


@pytest.mark.skipif(bf16_runs_on("cpu"), reason="this CPU runs the LSTM in bfloat16")
def test_bf16_is_refused_before_the_run_starts_where_the_cpu_cannot_run_it(corpus, tmp_path, capsys):
    out = tmp_path / "bf16"
    assert lyricist_main(train_args(corpus, out, "run.precision='bf16'")) != 0
    assert "run.precision bf16" in capsys.readouterr().err
    assert not out.exists()  # nothing was started, so nothing needs resuming


def test_validation_split_is_the_benchmark_split():
    corpus = read_corpus(SHAKESPEARE)
    assert VALIDATION_FRACTION == 0.1
    assert len(corpus.train_text) == 1_003_854 and len(corpus.validation_text) == 111_540
    assert corpus.name == "tinyshakespeare"


def test_two_processes_train_like_one(corpus, tmp_path):
    # Without dropout, two replicas on half the rows each must follow the
    # single-process run: DDP averages the gradients of equal halves.
    plain = ["model.dropout.embedding=0", "model.dropout.input=0", "model.dropout.between_layers=0",
             "model.dropout.output=0", "model.dropout.weight=0", "optim.max_steps=12"]
    assert lyricist_main(train_args(corpus, tmp_path / "one", *plain)) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               "-m", "lyricist.model.cli", *train_args(corpus, tmp_path / "two", *plain)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    two = load_checkpoint(tmp_path / "two")
    assert two.training["processes"] == 2
    assert train_losses(tmp_path / "two") == pytest.approx(train_losses(tmp_path / "one"), rel=1e-4)
    one = load_checkpoint(tmp_path / "one")
    for (name, a), b in zip(one.model.state_dict().items(), two.model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-5, msg=name)


def test_two_processes_with_dropout_and_a_time_budget_stay_in_sync(corpus, tmp_path):
    # Each replica draws its own dropout masks, and the schedule follows the clock:
    # the replicas must still agree (the trainer checks at every evaluation).
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               "-m", "lyricist.model.cli", *train_args(corpus, tmp_path / "two", "run.eval_every_steps=15"),
               "--max-minutes", "0.15"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    facts = load_checkpoint(tmp_path / "two").training
    assert facts["finished"] and facts["stop_reason"] == "budget reached" and facts["steps"] > 15
