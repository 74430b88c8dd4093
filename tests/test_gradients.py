"""`lyricist inspect gradients`: the vanishing-gradient study, end to end on a tiny corpus."""

import json
import math

import pytest
import torch

from lyricist.model.cli import main as lyricist_main
from lyricist.model.memory import State
from lyricist.training.inspect import JSON_FILE, PLOT_FILE, WARMUP, gradient_norms

from .helpers import tiny_model



def study_args(corpus, out, *more):
    return ["inspect", "gradients", "--corpus", str(corpus), "--cells", "rnn,gru,lstm", "--minutes", "0",
            "--steps", "4", "--max-k", "25", "--sequences", "3", "--hidden", "16", "--vocab", "400",
            "--out", str(out), "--set", "optim.batch_size=8", "--set", "optim.bptt=16", *more]


def test_the_study_trains_each_cell_and_writes_one_curve_per_cell(corpus, tmp_path, capsys):
    out = tmp_path / "study"
    assert lyricist_main(study_args(corpus, out)) == 0
    assert (out / PLOT_FILE).read_bytes().startswith(b"\x89PNG")
    study = json.loads((out / JSON_FILE).read_text())
    assert list(study["cells"]) == ["rnn_tanh", "gru", "lstm"] and study["max_k"] == 25
    for cell, result in study["cells"].items():
        assert result["steps"] == 4 and result["sequences"] == 3
        assert math.isfinite(result["val_nats_per_char"])
        for curve in ("grad_norm_mean", "grad_norm_geomean", "grad_norm_median"):
            assert len(result[curve]) == 26 and all(math.isfinite(v) and v >= 0 for v in result[curve])
        assert result["grad_norm_mean"][0] > 0
    # same tokenizer for every cell, so their figures compare
    pieces = {(out / cell / "tokenizer.model").read_bytes() for cell in study["cells"]}
    assert len(pieces) == 1
    printed = capsys.readouterr().out
    assert "plain RNN (tanh)" in printed and "LSTM" in printed and str(out / PLOT_FILE) in printed

    # Run again: the trained models are reused (same settings), only the measurement is redone.
    before = (out / "lstm" / "model.safetensors").stat().st_mtime_ns
    assert lyricist_main(study_args(corpus, out, "--max-k", "10")) == 0
    assert "reusing" in capsys.readouterr().out
    assert (out / "lstm" / "model.safetensors").stat().st_mtime_ns == before
    assert len(json.loads((out / JSON_FILE).read_text())["cells"]["gru"]["grad_norm_mean"]) == 11
    # ... but not a model trained with other settings
    assert lyricist_main(study_args(corpus, out, "--hidden", "8")) == 1
    assert "other settings" in capsys.readouterr().err


def test_without_recurrent_weights_nothing_flows_back():
    # A plain RNN whose hidden-to-hidden matrix is zero: h(T-k) for k >= 1 cannot reach the loss at T.
    model = tiny_model(60, cell="rnn_tanh", layers=1, embedding_size=8, hidden_size=8)
    with torch.no_grad():
        model.rnns[0].weight_hh_l0.zero_()
    windows = torch.randint(3, 60, (4, WARMUP + 12))
    norms = gradient_norms(model, windows, max_k=10)
    assert norms.shape == (4, 11)
    assert (norms[:, 0] > 0).all() and (norms[:, 1:] == 0).all()


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_the_per_step_gradients_are_those_of_the_whole_sequence(cell):
    # The same ∂L_T/∂h(T−k), computed another way: make the state after step T−k a leaf and read the
    # remaining k pieces in one call.
    model = tiny_model(40, cell=cell, layers=1, embedding_size=6, hidden_size=6, seed=2)
    max_k = 8
    windows = torch.randint(3, 40, (3, WARMUP + max_k + 2), generator=torch.Generator().manual_seed(0))
    norms = gradient_norms(model, windows, max_k)
    for k in (0, 1, 5, max_k):
        end = WARMUP + max_k - k + 1  # the pieces read up to step T−k
        with torch.no_grad():
            state = model.features(windows[:, :end]).state.rnn
        state.requires_grad_(True)
        last = model.features(windows[:, end : WARMUP + max_k + 1], State(state)).state.rnn if k else state
        loss = torch.nn.functional.cross_entropy(model.logits(last[-1, 0]), windows[:, -1], reduction="sum")
        (grad,) = torch.autograd.grad(loss, state)
        torch.testing.assert_close(norms[:, k].float(), grad[-1, 0].norm(dim=-1), rtol=1e-4, atol=1e-9)


@pytest.mark.parametrize("cells, message", [("rnn,tcn", "--cells"), ("lstm,lstm", "twice")])
def test_unknown_or_repeated_cells_are_refused(corpus, tmp_path, capsys, cells, message):
    assert lyricist_main(["inspect", "gradients", "--corpus", str(corpus), "--cells", cells,
                          "--out", str(tmp_path / "x")]) == 1
    assert message in capsys.readouterr().err
