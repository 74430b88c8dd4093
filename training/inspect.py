"""`lyricist inspect gradients`: the vanishing-gradient study (docs/gradients.md).

Trains one small model per cell (plain RNN, GRU, LSTM) on the same corpus for
the same budget, then measures how much the loss at a step T depends on the
hidden state k steps earlier: the norm of ∂L_T/∂h_{T−k} for k = 0..K, averaged
over sequences taken from the validation text, and plots it per cell on a log
scale, with the validation figure each model reached.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from lyricist.model import LanguageModel, Tokenizer, load_checkpoint
from lyricist.model.checkpoint import checkpoint_exists, read_extra_file
from lyricist.model.memory import State

from .config import TrainConfig, load_config
from .data import read_corpus
from .run_state import STATE_FILE
from .trainer import Trainer

CELL_NAMES = {"rnn": "rnn_tanh", "rnn_tanh": "rnn_tanh", "rnn_relu": "rnn_relu", "gru": "gru", "lstm": "lstm"}
LABELS = {"rnn_tanh": "plain RNN (tanh)", "rnn_relu": "plain RNN (ReLU)", "gru": "GRU", "lstm": "LSTM"}
PLOT_FILE = "gradients.png"
JSON_FILE = "gradients.json"
WARMUP = 50  # pieces read (without gradients) before each measured window, so its state is a real one


def add_inspect_command(subcommands: argparse._SubParsersAction) -> None:
    p = subcommands.add_parser("inspect", help="studies of how models work (docs/gradients.md)")
    studies = p.add_subparsers(dest="study", required=True, metavar="STUDY")
    g = studies.add_parser("gradients", help="train small RNN/GRU/LSTM models; plot how gradients fade over time")
    g.add_argument("--corpus", required=True, metavar="FILE", help="any UTF-8 text file (the last 10%% validates)")
    g.add_argument("--cells", default="rnn,gru,lstm", help="comma-separated: rnn (tanh), rnn_relu, gru, lstm")
    g.add_argument("--minutes", type=float, default=2.0, metavar="M", help="training budget per cell (default 2)")
    g.add_argument("--steps", type=int, default=0, metavar="N", help="or a budget in steps per cell (0 = none)")
    g.add_argument("--max-k", type=int, default=200, metavar="K", help="how many steps back to measure (default 200)")
    g.add_argument("--sequences", type=int, default=32, metavar="N", help="windows averaged over (default 32)")
    g.add_argument("--hidden", type=int, default=128, metavar="H", help="hidden (and embedding) size (default 128)")
    g.add_argument("--vocab", type=int, default=1000, metavar="V", help="tokenizer pieces, shared (default 1000)")
    g.add_argument("--threads", type=int, default=1, metavar="N", help="torch threads (default 1)")
    g.add_argument("--seed", type=int, default=1234)
    g.add_argument("--out", default="gradient-study", metavar="DIR",
                   help="where the models, gradients.png and gradients.json go (default ./gradient-study)")
    g.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="another training setting")
    g.set_defaults(run=_run_gradients)


def _run_gradients(args: argparse.Namespace) -> int:
    cells = [c.strip() for c in args.cells.split(",") if c.strip()]
    unknown = [c for c in cells if c not in CELL_NAMES]
    if unknown or not cells:
        raise ValueError(f"--cells takes a comma-separated list of {', '.join(CELL_NAMES)}; got {args.cells!r}")
    if len(set(map(CELL_NAMES.get, cells))) != len(cells):
        raise ValueError(f"--cells names a cell twice: {args.cells!r}")
    if args.max_k < 1 or args.sequences < 1 or args.hidden < 1 or args.vocab < 300:
        raise ValueError("--max-k, --sequences and --hidden must be at least 1, --vocab at least 300")
    if args.minutes <= 0 and args.steps <= 0:
        raise ValueError("give a budget: --minutes M or --steps N")
    result = gradient_study(args.corpus, [CELL_NAMES[c] for c in cells], Path(args.out), minutes=args.minutes,
                            steps=args.steps, max_k=args.max_k, sequences=args.sequences, hidden=args.hidden,
                            vocab=args.vocab, threads=args.threads, seed=args.seed, extra=args.set)
    for cell, r in result["cells"].items():
        norms = r["grad_norm_mean"]
        at = [k for k in (1, 10, 50, 100, 200) if k < len(norms)]
        shown = ", ".join(f"k={k}: {norms[k] / norms[0]:.1e}" for k in at)
        print(f"{LABELS[cell]:16} validation {r['val_nats_per_char']:.4f} nats/char after {r['steps']} steps; "
              f"|dL/dh(T-k)| / |dL/dh(T)|: {shown}")
        if "gates" in r:
            g = r["gates"]
            print(f"{'':16} {g['gate']}: mean {g['mean']:.2f}, the most open unit {g['max_unit_mean']:.3f}, "
                  f"{g['units_above_0.9']} of {g['units']} units above 0.9, {g['units_above_0.99']} above 0.99")
    print(f"plot: {Path(args.out) / PLOT_FILE}; figures: {Path(args.out) / JSON_FILE}")
    return 0


def study_config(cell: str, hidden: int, vocab: int, minutes: float, steps: int, threads: int, seed: int,
                 tokenizer_from: str, extra: list[str]):
    """One cell's training settings: a one-layer tied model, no dropout and no activation
    regularisation, so that what differs between the runs is the cell alone."""
    overrides = [
        f'model.cell="{cell}"', "model.layers=1", f"model.hidden_size={hidden}", f"model.embedding_size={hidden}",
        f"model.vocab_size={vocab}", "model.dropout.embedding=0", "model.dropout.input=0",
        "model.dropout.between_layers=0", "model.dropout.output=0", "model.dropout.weight=0",
        "optim.ar=0", "optim.tar=0", f"optim.max_minutes={max(minutes, 0)}", f"optim.max_steps={max(steps, 0)}",
        "optim.patience=0", "run.eval_every_steps=100000000", "run.eval_every_minutes=1e9",  # one, at the end
        "run.samples_in_card=0", "run.dynamic_stats_chars=0", f"run.threads={threads}", f"seed={seed}",
        'preset="default"',
    ]
    if tokenizer_from:
        overrides.append(f'tokenizer.reuse="{tokenizer_from}"')
    return load_config(None, [*overrides, *extra])


def gradient_study(corpus_path: str | Path, cells: list[str], out: Path, *, minutes: float = 2.0, steps: int = 0,
                   max_k: int = 200, sequences: int = 32, hidden: int = 128, vocab: int = 1000, threads: int = 1,
                   seed: int = 1234, extra: list[str] = ()) -> dict:
    """Train (or reuse, when already trained with the same settings) one model per cell in
    OUT/CELL, measure its gradients, and write OUT/gradients.png and OUT/gradients.json."""
    torch.set_num_threads(max(1, threads))
    corpus = read_corpus(corpus_path)
    out.mkdir(parents=True, exist_ok=True)
    results, tokenizer_from = {}, ""
    for cell in cells:
        run_dir = out / cell
        config = study_config(cell, hidden, vocab, minutes, steps, threads, seed, tokenizer_from, list(extra))
        if not _trained_with(run_dir, config):
            if checkpoint_exists(run_dir):
                raise ValueError(f"{run_dir} holds a model trained with other settings; choose another --out")
            print(f"training the {LABELS[cell]} ({_budget(minutes, steps)})...", flush=True)
            Trainer(corpus, run_dir, config, command="lyricist inspect gradients").run()
        else:
            print(f"reusing the {LABELS[cell]} trained in {run_dir}", flush=True)
        tokenizer_from = tokenizer_from or str(run_dir)  # every cell reads the same pieces
        checkpoint = load_checkpoint(run_dir)
        torch.manual_seed(seed)
        windows = measurement_windows(checkpoint.tokenizer, corpus.validation_text, max_k, sequences)
        norms = gradient_norms(checkpoint.model, windows, max_k)  # (sequences, max_k + 1)
        facts = checkpoint.training
        gates = gate_statistics(checkpoint.model, windows)
        results[cell] = {
            "label": LABELS[cell],
            "val_nats_per_char": facts["val_nats_per_char"],
            "parameters": facts["parameters"],
            "steps": facts["steps"],
            "train_minutes": facts["train_minutes"],
            "sequences": norms.shape[0],
            "grad_norm_mean": norms.mean(0).tolist(),
            "grad_norm_geomean": norms.clamp_min(1e-300).log().mean(0).exp().tolist(),
            "grad_norm_median": norms.median(0).values.tolist(),
            **({"gates": gates} if gates else {}),
        }
    study = {
        "what": "norm of the gradient of the loss at step T with respect to the hidden state at step T-k "
                "(the top layer's h), for k = 0..max_k; index k of each list; averaged over windows of the "
                "validation text",
        "corpus": corpus.name, "corpus_sha256": corpus.sha256, "max_k": max_k, "warmup": WARMUP,
        "budget": {"minutes": minutes, "steps": steps}, "hidden": hidden, "vocab": vocab, "layers": 1,
        "threads": threads, "seed": seed, "cells": results,
    }
    (out / JSON_FILE).write_text(json.dumps(study, indent=1) + "\n")
    (out / PLOT_FILE).write_bytes(plot(study))
    return study


def _budget(minutes: float, steps: int) -> str:
    parts = ([f"{minutes:g} minutes"] if minutes > 0 else []) + ([f"{steps} steps"] if steps > 0 else [])
    return " or ".join(parts)


def _trained_with(run_dir: Path, config) -> bool:
    """Whether RUN_DIR holds a finished run of exactly these settings (so the study can be re-plotted)."""
    if not checkpoint_exists(run_dir):
        return False
    try:
        state = json.loads(read_extra_file(run_dir, STATE_FILE))
    except Exception:  # noqa: BLE001 — anything unreadable is simply not reusable
        return False
    try:
        saved = TrainConfig.from_dict(state["config"]).to_dict()  # keys added since: their defaults
    except (KeyError, ValueError):
        return False
    wanted = config.to_dict()
    # The run section (threads, cadence of evaluations and checkpoints) does not change what is learned.
    saved.pop("run"), wanted.pop("run")
    return state.get("progress", {}).get("finished", False) and saved == wanted


def measurement_windows(tokenizer: Tokenizer, text: str, max_k: int, sequences: int) -> Tensor:
    """(sequences, WARMUP + max_k + 2) piece ids: windows spread evenly over `text`."""
    ids = tokenizer.encode(text)
    length = WARMUP + max_k + 2
    if len(ids) < length:
        raise ValueError(f"the validation text holds {len(ids)} pieces; measuring up to k={max_k} needs {length}: "
                         "use a longer corpus or a smaller --max-k")
    count = min(sequences, len(ids) - length + 1)
    starts = torch.linspace(0, len(ids) - length, count).long().tolist()
    return torch.tensor([ids[s : s + length] for s in starts])


def gradient_norms(model: LanguageModel, windows: Tensor, max_k: int) -> Tensor:
    """‖∂L_T/∂h_{T−k}‖ for k = 0..max_k, one row per window: (windows, max_k + 1).

    Each window is read WARMUP pieces without gradients, then one piece at a time
    (a per-step loop, so that every step's state is a tensor of its own whose
    gradient can be kept); L_T is the loss of predicting the window's last piece
    from the state after the step before it. h is the top layer's hidden output
    (for an LSTM its h, not the cell state c).
    """
    model = model.float().eval()
    device = model.device
    windows = windows.to(device)
    with torch.no_grad():
        state = model.features(windows[:, :WARMUP]).state.rnn  # the recurrent state: what the study follows
    states = []
    with torch.enable_grad():
        state = state.detach().requires_grad_(False)
        for t in range(WARMUP, WARMUP + max_k + 1):
            state = model.features(windows[:, t : t + 1], State(state)).state.rnn
            state.retain_grad()
            states.append(state)
        hidden = states[-1][-1, 0]  # (windows, H): the top layer's h after the last step, T
        logits = model.logits(hidden)
        loss = F.cross_entropy(logits, windows[:, -1], reduction="sum")  # each window's loss is its own
        loss.backward()
    norms = [states[-1 - k].grad[-1, 0].norm(dim=-1) for k in range(max_k + 1)]
    for parameter in model.parameters():
        parameter.grad = None
    return torch.stack(norms, dim=1).double().cpu()


def gate_statistics(model: LanguageModel, windows: Tensor) -> dict | None:
    """How much of its state the first layer keeps per step, on the windows: the LSTM's forget gate f
    (c ← f·c + ...), the GRU's update gate z (h ← z·h + (1 − z)·n); None for a plain RNN, which keeps nothing
    by construction. A unit whose gate stays near 1 carries its state, and the gradient, far back."""
    cell = model.config.cell
    if cell not in ("lstm", "gru") or model.config.layers != 1:
        return None
    rnn, size = model.rnns[0], model.config.hidden_size
    windows = windows.to(model.device)
    with torch.no_grad():
        inputs = model.embedding(windows)
        outputs = model.features(windows).hidden  # h at every step, from a zero state
        previous = torch.cat([torch.zeros_like(outputs[:, :1]), outputs[:, :-1]], dim=1)
        gates = inputs @ rnn.weight_ih_l0.T + rnn.bias_ih_l0 + previous @ rnn.weight_hh_l0.T + rnn.bias_hh_l0
        keep = torch.sigmoid(gates[..., size : 2 * size])  # LSTM rows: i, f, g, o; GRU rows: r, z, n
    per_unit = keep.mean(dim=(0, 1))
    return {
        "gate": "forget gate f" if cell == "lstm" else "update gate z",
        "mean": float(keep.mean()),
        "max_unit_mean": float(per_unit.max()),
        "units_above_0.9": int((per_unit > 0.9).sum()),
        "units_above_0.99": int((per_unit > 0.99).sum()),
        "units": size,
    }


def plot(study: dict) -> bytes:
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7.5, 4.5), dpi=110)
    for cell, r in study["cells"].items():
        norms = r["grad_norm_mean"]
        label = (f"{r['label']}: validation {r['val_nats_per_char']:.3f} nats/char "
                 f"({r['parameters']:,} parameters, {r['steps']:,} steps)")
        axis.semilogy(range(len(norms)), [max(n, 1e-300) for n in norms], label=label, linewidth=1.6)
    axis.set_xlabel("k: steps back from T (pieces)")
    axis.set_ylabel("‖∂ loss at T / ∂ hidden state at T−k‖ (mean)")
    budget = _budget(study["budget"]["minutes"], study["budget"]["steps"])
    axis.set_title(f"How far back the gradient reaches — {study['corpus']}, {budget} of training per cell",
                   fontsize=10)
    axis.grid(alpha=0.3, which="both")
    axis.legend(fontsize=8)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return buffer.getvalue()
