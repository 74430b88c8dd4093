"""Weight averaging in training (optim.ema_decay): evaluated beside the weights, kept when better, resumed exactly."""

import json
import signal

import pytest
import torch

from lyricist.model import load_checkpoint
from lyricist.model.checkpoint import read_extra_file
from lyricist.model.cli import main as lyricist_main
from lyricist.model.scoring import score_text
from lyricist.training.config import load_config
from lyricist.training.data import read_corpus
from lyricist.training.run_state import LOG_FILE, load_for_resume
from lyricist.training.trainer import Trainer


TINY = [
    "model.vocab_size=400", "model.hidden_size=32", "model.embedding_size=16", "optim.batch_size=8",
    "optim.bptt=16", "optim.warmup_steps=5", "run.log_every_steps=1", "run.eval_every_steps=10",
    "run.samples_in_card=1", "run.threads=1", "optim.max_steps=30",
]
# A large constant step leaves the weights jumping around the valley: their average scores better.
EMA_WINS = ["optim.ema_decay=0.8", "optim.lr=0.02", "optim.schedule=constant"]
# A slow average over a short run from scratch still remembers the untrained start: it scores worse.
RAW_WINS = ["optim.ema_decay=0.99"]



def evals(out) -> list[dict]:
    log = [json.loads(line) for line in read_extra_file(out, LOG_FILE).decode().splitlines()]
    return [e for e in log if e["event"] == "eval"]


def nats(figures: dict) -> float:
    return figures["nats_per_char"]


@pytest.mark.parametrize("settings, kept", [(EMA_WINS, "ema"), (RAW_WINS, "raw")])
def test_the_average_is_evaluated_beside_the_weights_and_kept_when_it_scores_better(corpus, tmp_path, settings,
                                                                                    kept):
    out = tmp_path / "run"
    args = ["train", "--corpus", str(corpus), "--out", str(out)]
    for setting in [*TINY, *settings]:
        args += ["--set", setting]
    assert lyricist_main(args) == 0
    entries = evals(out)
    assert [e["step"] for e in entries] == [10, 20, 30]
    for e in entries:
        assert e["weights"] == ("ema" if nats(e["val_ema"]) < nats(e["val_raw"]) else "raw")
        assert e["val"] == e[f"val_{e['weights']}"]
    best = min(entries, key=lambda e: nats(e["val"]))
    checkpoint = load_checkpoint(out)
    facts = checkpoint.training
    assert facts["weights"] == best["weights"] == kept
    assert facts["val_nats_per_char"] == nats(best["val"])
    assert (facts["val_raw_nats_per_char"], facts["val_ema_nats_per_char"]) == (nats(best["val_raw"]),
                                                                                 nats(best["val_ema"]))
    # The checkpoint holds the weights that scored the figure it reports.
    validation = read_corpus(corpus).validation_text
    assert nats(score_text(checkpoint.model, checkpoint.tokenizer, validation).metrics()) == \
        pytest.approx(nats(best["val"]), rel=1e-9)
    card = read_extra_file(out, "README.md").decode()
    assert ("exponential moving average of the weights" in card) == (kept == "ema") and "| weights |" in card


def tiny_config(*settings):
    return load_config(None, [*TINY, *settings])


def test_the_average_is_the_debiased_exponential_average_of_every_step(corpus, tmp_path):
    decay = 0.7
    trainer = Trainer(read_corpus(corpus), tmp_path / "unused", tiny_config(f"optim.ema_decay={decay}"), "")
    seen = []
    for _ in range(6):
        trainer._step()
        seen.append([p.detach().clone() for p in trainer.model.parameters()])
    weights = torch.tensor([decay ** (len(seen) - 1 - i) for i in range(len(seen))], dtype=torch.float64)
    weights /= weights.sum()
    for index, average in enumerate(trainer.average):
        expected = sum(w * step[index].double() for w, step in zip(weights, seen))
        torch.testing.assert_close(average.double(), expected, rtol=1e-5, atol=1e-7)
    assert trainer.progress.ema_updates == 6


def test_an_interrupted_run_resumes_its_average_exactly(corpus, tmp_path):
    config = tiny_config(*EMA_WINS)
    whole = Trainer(read_corpus(corpus), tmp_path / "whole", config, "")
    whole.run()

    out = tmp_path / "interrupted"
    first = Trainer(read_corpus(corpus), out, config, "")
    step = first._step

    def step_then_stop_at_12():
        loss = step()
        if first.progress.step == 11:  # the loop counts this step next
            first._stop_signal = signal.SIGINT
        return loss

    first._step = step_then_stop_at_12
    assert not first.run().finished
    saved = load_for_resume(out)
    assert any(name.startswith("ema.") for name in saved["tensors"])
    resumed = Trainer(read_corpus(corpus), out, config, "", resume_from=saved)
    assert resumed.progress.step == 12 and resumed.progress.ema_updates == first.progress.ema_updates == 12
    for restored, kept in zip(resumed.average, first.average, strict=True):
        assert torch.equal(restored, kept)
    assert resumed.progress.best_weights_kind == first.progress.best_weights_kind
    for name, tensor in first.best_weights.items():
        assert torch.equal(resumed.best_weights[name], tensor)
    assert resumed.run().finished

    assert evals(out) == [{**e, "elapsed_s": f["elapsed_s"]} for e, f in zip(evals(tmp_path / "whole"), evals(out))]
    a, b = load_checkpoint(tmp_path / "whole"), load_checkpoint(out)
    assert a.training["weights"] == b.training["weights"]
    for (name, x), y in zip(a.model.state_dict().items(), b.model.state_dict().values()):
        assert torch.equal(x, y), name


def test_ema_decay_must_be_below_one(corpus, tmp_path, capsys):
    args = ["train", "--corpus", str(corpus), "--out", str(tmp_path / "out"), "--set", "optim.ema_decay=1"]
    assert lyricist_main(args) == 1
    assert "optim.ema_decay must be in [0, 1)" in capsys.readouterr().err
