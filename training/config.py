"""Training configuration: plain dataclasses, read from TOML, overridden by flags.

Every default is documented here and in docs/training.md.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lyricist.model.network import DropoutConfig, ModelConfig, from_dict

OPTIMIZERS = ("adamw", "nt-asgd")
SCHEDULES = ("cosine", "constant")
SCHEDULED_SAMPLING = ("none", "linear", "exponential", "inverse_sigmoid")
PRESETS = ("auto", "default", "short", "fine-tuning")
PRECISIONS = ("fp32", "bf16")


@dataclass
class TokenizerSettings:
    model_type: str = "unigram"  # or "bpe"; the vocabulary size is model.vocab_size
    reuse: str = ""  # a checkpoint directory or tokenizer.model to reuse instead of training one


@dataclass
class OptimSettings:
    optimizer: str = "adamw"  # or "nt-asgd": SGD, then averaging once validation stalls (AWD-LSTM)
    lr: float = 3e-3  # peak learning rate (AWD-LSTM's NT-ASGD uses 30)
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.99)
    schedule: str = "cosine"  # cosine decay to lr * min_lr_ratio over the run, or "constant"
    warmup_steps: int = 100
    min_lr_ratio: float = 0.05
    nonmono: int = 5  # NT-ASGD: evaluations without improvement before averaging starts
    clip: float = 0.25  # gradient norm clipping
    batch_size: int = 32  # sequences per step, over all processes
    bptt: int = 70  # mean truncated-BPTT length in pieces
    variable_bptt: bool = True  # AWD: bptt w.p. 0.95 else bptt/2, then N(len, 5), at least 5; lr scaled by len/bptt
    ar: float = 2.0  # activation regularisation on the dropped last-layer output
    tar: float = 1.0  # temporal activation regularisation on the raw last-layer output
    rename_speakers: float = 0.0  # share of scenes whose speakers get new names, drawn every epoch (plays)
    scheduled_sampling: str = "none"  # or linear / exponential / inverse_sigmoid (Bengio et al. 2015)
    ss_k: float = 1.0  # schedule parameter: linear slope start, exponential base, inverse-sigmoid k
    ss_c: float = 0.0  # linear: decrease of the teacher-forcing probability per step
    ss_min: float = 0.75  # teacher-forcing probability never goes below this
    max_epochs: float = 100.0
    max_steps: int = 0  # 0 = no limit
    max_minutes: float = 0.0  # 0 = no limit; the run ends with a checkpoint
    patience: int = 10  # early stopping: evaluations without improvement; 0 = never stop early
    ema_decay: float = 0.0  # exponential moving average of the weights, evaluated beside them; 0 = off


@dataclass
class RunSettings:
    eval_every_steps: int = 500
    eval_every_minutes: float = 10.0  # whichever of the two comes first
    checkpoint_every_minutes: float = 1.0
    log_every_steps: int = 20
    samples_in_card: int = 3
    device: str = "auto"  # "auto", "cpu", "cuda", "cuda:1", ...
    threads: int = 0  # torch intra-op threads; 0 = torch's default
    precision: str = "fp32"  # or "bf16": training's forward products in bfloat16 (docs/training.md)
    dynamic_stats_chars: int = 100_000  # a finished run measures dynamic evaluation's normaliser on this
    # many characters at the end of the training text and keeps it in the checkpoint; 0 = not


def default_model() -> ModelConfig:
    return ModelConfig(
        vocab_size=4000,
        dropout=DropoutConfig(embedding=0.1, input=0.3, between_layers=0.25, output=0.4, weight=0.4),
    )


@dataclass
class TrainConfig:
    seed: int = 1234
    preset: str = "auto"  # "auto": "short" for a from-scratch --max-minutes of at most SHORT_BUDGET_MINUTES
    tokenizer: TokenizerSettings = field(default_factory=TokenizerSettings)
    model: ModelConfig = field(default_factory=default_model)
    optim: OptimSettings = field(default_factory=OptimSettings)
    run: RunSettings = field(default_factory=RunSettings)

    def __post_init__(self):
        problems = []
        o = self.optim
        if o.optimizer not in OPTIMIZERS:
            problems.append(f"optim.optimizer must be one of {', '.join(OPTIMIZERS)}, got {o.optimizer!r}")
        if o.schedule not in SCHEDULES:
            problems.append(f"optim.schedule must be one of {', '.join(SCHEDULES)}, got {o.schedule!r}")
        if self.preset not in PRESETS:
            problems.append(f"preset must be one of {', '.join(PRESETS)}, got {self.preset!r}")
        if o.scheduled_sampling not in SCHEDULED_SAMPLING:
            problems.append(
                f"optim.scheduled_sampling must be one of {', '.join(SCHEDULED_SAMPLING)}, got {o.scheduled_sampling!r}"
            )
        for name in ("lr", "clip", "batch_size", "bptt", "max_epochs"):
            if not getattr(o, name) > 0:
                problems.append(f"optim.{name} must be > 0, got {getattr(o, name)!r}")
        for name in ("weight_decay", "warmup_steps", "ar", "tar", "max_steps", "max_minutes", "patience", "ss_c"):
            if not getattr(o, name) >= 0:
                problems.append(f"optim.{name} must be >= 0, got {getattr(o, name)!r}")
        if not 0 <= o.min_lr_ratio <= 1 or not 0 <= o.ss_min <= 1:
            problems.append("optim.min_lr_ratio and optim.ss_min must be in [0, 1]")
        if not 0 <= o.rename_speakers <= 1:
            problems.append(f"optim.rename_speakers must be in [0, 1], got {o.rename_speakers!r}")
        if not 0 <= o.ema_decay < 1:
            problems.append(f"optim.ema_decay must be in [0, 1) (0 = no weight averaging), got {o.ema_decay!r}")
        if o.bptt < 5:
            problems.append(f"optim.bptt must be at least 5, got {o.bptt}")
        if self.tokenizer.model_type not in ("unigram", "bpe"):
            problems.append(f"tokenizer.model_type must be 'unigram' or 'bpe', got {self.tokenizer.model_type!r}")
        r = self.run
        if r.precision not in PRECISIONS:
            problems.append(f"run.precision must be one of {', '.join(PRECISIONS)}, got {r.precision!r}")
        if r.dynamic_stats_chars < 0:
            problems.append(f"run.dynamic_stats_chars must be >= 0, got {r.dynamic_stats_chars!r}")
        if r.eval_every_steps < 1 or r.log_every_steps < 1 or r.checkpoint_every_minutes <= 0:
            problems.append("run.eval_every_steps and run.log_every_steps must be >= 1, "
                            "run.checkpoint_every_minutes > 0")
        if problems:
            raise ValueError("; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        data = dict(data)
        sections = {"tokenizer": TokenizerSettings, "model": ModelConfig, "optim": OptimSettings, "run": RunSettings}
        for name, section_class in sections.items():
            if name in data:
                data[name] = from_dict(section_class, data[name], name)
        if "optim" in data:
            data["optim"].betas = tuple(data["optim"].betas)
        return from_dict(cls, data, "config")


# Short budgets: what differs from the defaults when a run from scratch has --max-minutes of at
# most SHORT_BUDGET_MINUTES (about 1,500 steps on a 2-core CPU). The long-run dropout holds a short
# run back (1.51 against 1.43 nats/char at 1,000 steps); measured, docs/benchmarks.md.
SHORT_BUDGET_MINUTES = 15.0
SHORT_BUDGET: dict[str, dict[str, Any]] = {
    "model": {"dropout": {"embedding": 0.0, "input": 0.05, "between_layers": 0.05, "output": 0.1, "weight": 0.1}},
    "optim": {"lr": 5e-3},
}

# Fine-tuning (`lyricist train --from DIR`): what differs from the defaults above. The model
# section is the base checkpoint's own (its dropout may be changed, nothing else). Why these
# values, and the trials behind them: docs/training.md, "Fine-tuning".
FINE_TUNING: dict[str, dict[str, Any]] = {
    "optim": {
        "lr": 1e-3,  # a third of the from-scratch rate: 3e-3 overfits 60 KB within 4 passes, 3e-4 is 3x slower
        "warmup_steps": 20,  # a short ramp for Adam's first, noisy estimates (it made no difference in the trials)
        "schedule": "cosine",
        "batch_size": 8,  # as good as 16 or 32 per token seen, and a 4 KB corpus still fills a batch
        "bptt": 50,
        "max_epochs": 30.0,  # the cosine spans 30 passes (or the time budget); early stopping ends most runs sooner
        "patience": 4,  # evaluations without improvement: 200 steps, over 3 passes of 60 KB
    },
    "run": {
        "eval_every_steps": 50,  # about one pass of 60 KB; a few seconds' work on a 2-core CPU
        "eval_every_minutes": 2.0,
        "samples_in_card": 1,  # drawn at every evaluation; three cost as much as ten training steps on a CPU
    },
}
MIN_FINE_TUNING_BYTES = 4096  # below this, a few songs' worth, there is nothing to hold out and learn from


def fine_tuning_defaults(model: ModelConfig, tokenizer_model_type: str = "unigram") -> TrainConfig:
    """The starting point of a fine-tune: the defaults, the base's model, FINE_TUNING over both."""
    data = TrainConfig().to_dict()
    data["model"] = model.to_dict()
    data["tokenizer"]["model_type"] = tokenizer_model_type
    data["preset"] = "fine-tuning"
    _merge(data, FINE_TUNING, "")
    return TrainConfig.from_dict(data)


def load_config(path: str | Path | None, overrides: list[str] = (), base: TrainConfig | None = None) -> TrainConfig:
    """`base` (the defaults, or the short-budget preset over them), updated by a TOML file, updated by
    `section.key=value` overrides: what the user sets always wins over a preset."""
    user: dict[str, Any] = {}
    if path:
        try:
            user = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
            raise ValueError(f"cannot read config {path}: {error}") from None
    for override in overrides:
        key, sep, raw = override.partition("=")
        if not sep:
            raise ValueError(f"--set takes KEY=VALUE, got {override!r}")
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw  # a bare word is a string
        *parents, leaf = key.strip().split(".")
        _nested(user, parents)[leaf] = value
    config = _updated(base or TrainConfig(), user)
    if config.preset == "auto":
        short = base is None and 0 < config.optim.max_minutes <= SHORT_BUDGET_MINUTES
        config.preset = "short" if short else "default"
    if config.preset == "short" and base is None:
        data = TrainConfig().to_dict()
        _merge(data, SHORT_BUDGET, "")
        config = _updated(TrainConfig.from_dict(data), user)
        config.preset = "short"
    return config


def _updated(base: TrainConfig, update: dict[str, Any]) -> TrainConfig:
    data = base.to_dict()
    _merge(data, update, "")
    return TrainConfig.from_dict(data)


def _nested(node: dict, keys: list[str]) -> dict:
    for depth, key in enumerate(keys):
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ValueError(f"config key {'.'.join(keys[:depth + 1])} is not a section")
    return node


def _merge(base: dict, update: dict, where: str) -> None:
    for key, value in update.items():
        path = f"{where}{key}"
        if key not in base:
            raise ValueError(f"unknown config key {path}")
        if isinstance(base[key], dict):
            if not isinstance(value, dict):
                raise ValueError(f"config key {path} is a section, got {value!r}")
            _merge(base[key], value, f"{path}.")
        else:
            base[key] = value
