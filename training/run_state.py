"""What a run saves beside its weights so that it can resume exactly where it stopped (docs/training.md):
its progress, the log, the optimizer's state, the carried hidden state, every random generator's state, the
best and averaged weights. Files in the checkpoint's folder, each verified by the checkpoint's manifest."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import safetensors.torch
from torch import Tensor

from lyricist.model import load_checkpoint
from lyricist.model.checkpoint import read_extra_file

STATE_FILE = "trainer_state.json"
TENSORS_FILE = "trainer_state.safetensors"
LOG_FILE = "metrics.jsonl"
PLOT_FILE = "training.png"
CARD_FILE = "README.md"


@dataclass
class Progress:
    """Everything about the run that is not a tensor; saved with every checkpoint."""

    step: int = 0
    tokens: int = 0
    elapsed_s: float = 0.0
    best_val: float = math.inf
    evals_since_best: int = 0
    val_history: list[float] = field(default_factory=list)
    averaging: bool = False  # NT-ASGD has switched to averaged SGD
    ema_updates: int = 0  # steps averaged into the exponential moving average of the weights (optim.ema_decay)
    best_weights_kind: str = ""  # which weights scored best: "raw", or "ema" (their moving average)
    last_eval_step: int = 0
    window_loss: float = 0.0  # the running sums of the current log window
    window_steps: int = 0
    finished: bool = False
    stop_reason: str = ""


def load_for_resume(out: Path) -> dict:
    """What a resumed run needs from its checkpoint, every file verified."""
    checkpoint = load_checkpoint(out)
    state = json.loads(read_extra_file(out, STATE_FILE))
    if state["progress"]["finished"]:
        raise ValueError(f"the run in {out} has finished ({state['progress']['stop_reason']}); nothing to resume")
    tensors = safetensors.torch.load(read_extra_file(out, TENSORS_FILE))
    log = [json.loads(line) for line in read_extra_file(out, LOG_FILE).decode().splitlines()]
    checkpoint.model.train()
    return {"model": checkpoint.model, "tokenizer": checkpoint.tokenizer, "state": state, "tensors": tensors,
            "log": log}


def split_optimizer_state(state: dict) -> tuple[dict, dict[str, Tensor]]:
    """An optimizer's state_dict as JSON and named tensors (a checkpoint holds no pickle)."""
    plain, tensors = {"param_groups": state["param_groups"], "state": {}}, {}
    for index, values in state["state"].items():
        plain["state"][str(index)] = {}
        for key, value in values.items():
            if isinstance(value, Tensor):
                tensors[f"optimizer.{index}.{key}"] = value.detach().cpu().contiguous()
            else:
                plain["state"][str(index)][key] = value
    return plain, tensors


def join_optimizer_state(plain: dict, tensors: dict[str, Tensor]) -> dict:
    """split_optimizer_state undone."""
    state = {int(index): dict(values) for index, values in plain["state"].items()}
    for name, tensor in tensors.items():
        if name.startswith("optimizer."):
            _, index, key = name.split(".", 2)
            state.setdefault(int(index), {})[key] = tensor
    groups = [{**g, "betas": tuple(g["betas"])} if "betas" in g else g for g in plain["param_groups"]]
    return {"state": state, "param_groups": groups}
