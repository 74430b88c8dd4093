"""Dynamic evaluation (Krause et al. 2018, "Dynamic Evaluation of Neural Sequence Models").

The text is scored segment by segment with the state carried through it, as
`model.scoring.score_text` does; after scoring each segment the model takes one
gradient step on it, so what it reads next is predicted by weights that have
followed the text so far:

    θ ← θ − η ∇ / (√MS + ε) + λ (θ₀ − θ)

∇ is the gradient of the segment's mean loss, MS the mean squared gradient of
each weight measured on training text (`gradient_statistics`), θ₀ the trained
weights (the decay pulls the adapted ones back towards them). Every piece is
scored before any step has seen it, so the figure stays an honest likelihood.

The steps are taken on a copy of the weights; the model passed in is never
written. Dropout is off throughout.

The normaliser travels in the checkpoint as `dynamic_eval.safetensors`
(`save_statistics`): a factored estimate, as Adafactor (Shazeer & Stern 2018)
keeps its second moments: for a matrix, the mean squared gradient of each row
and of each column, MS_ij ≈ row_i · col_j / mean(MS); vectors are kept whole.
It costs kilobytes instead of a second copy of the weights, and scored as well
as the full one on the tuning text (docs/benchmarks.md). The file's metadata
holds the tuned settings, which `DynamicSettings.for_checkpoint` reads.

Cost, for one text (measured with the shipped 6.3M-parameter model, one
thread): time grows linearly with the text, about 2.7 ms of CPU a piece
against 0.3 ms for static scoring (9×: a forward and a backward pass per
segment of 10 pieces and an update of every weight), so 1,000 pieces take
about 3 s of a core. Memory: per call, a copy of the weights and one set of
gradients (2 × 25 MB) plus one segment's activations; the denominators (one
more copy, 25 MB) are made once per `DynamicEvaluator` and shared by every
call. glibc's allocator may keep up to about 200 MB of freed blocks between
calls (a loop of calls stays flat: 400-530 MB resident against 300 MB for the
model alone; `malloc_trim` returns it).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import safetensors.torch
import torch
import torch.nn.functional as F
from torch import Tensor

from .network import LanguageModel
from .scoring import Score
from .tokenizer import Tokenizer
from .units import count_units

STATS_FILE = "dynamic_eval.safetensors"
STATS_FORMAT = "lyricist-dynamic-eval"


@dataclass(frozen=True)
class DynamicSettings:
    """The hyper-parameters; the defaults were tuned on training text (docs/benchmarks.md)."""

    segment: int = 10  # pieces scored between two steps
    lr: float = 3e-4  # η
    decay: float = 0.0  # λ: the pull back to the trained weights, per step (0 scored best on training text)
    eps: float = 1.0  # ε, relative: eps × the tensor's mean √MS is added to √MS (rare pieces' rows have MS ≈ 0)

    def __post_init__(self):
        if not isinstance(self.segment, int) or isinstance(self.segment, bool) or self.segment < 1:
            raise ValueError(f"the segment length must be a positive integer, got {self.segment!r}")
        for name in ("lr", "decay", "eps"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"dynamic evaluation {name} must be a finite number >= 0, got {value!r}")
        if self.decay > 1:
            raise ValueError(f"dynamic evaluation decay must be in [0, 1], got {self.decay!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def for_checkpoint(cls, directory: str | Path | None, **overrides) -> DynamicSettings:
        """The settings stored with a checkpoint's statistics (else the defaults), then `overrides`
        (None values ignored)."""
        stored = {}
        if directory is not None and has_statistics(directory):
            stored = read_statistics(directory)[1].get("settings", {})
        names = {f.name for f in fields(cls)}
        values = {k: v for k, v in stored.items() if k in names}
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


# -- the normaliser ------------------------------------------------------------------

def gradient_statistics(model: LanguageModel, tokenizer: Tokenizer, text: str, segment: int = 10,
                        factored: bool = True) -> dict[str, Tensor]:
    """The mean squared gradient of every weight, over the segments of `text` (training text).

    The gradient is the one dynamic evaluation steps with: the mean loss of one
    segment, state carried, dropout off. With `factored`, a matrix's statistics
    are kept as `NAME.rows` and `NAME.cols` (means over the other dimension).
    """
    work = copy.deepcopy(model).float().eval()
    work.requires_grad_(True)
    names, params = zip(*work.named_parameters())
    sums = [torch.zeros_like(p, dtype=torch.float64) for p in params]
    stream = _stream(work, tokenizer, text)
    segments = 0
    for inputs, targets, state in _segments(stream, segment):
        with torch.enable_grad():
            features = work.features(inputs, state.get())
            loss = F.cross_entropy(work.logits(features.dropped[0]), targets)
            grads = torch.autograd.grad(loss, params)
        state.set(features.state.map(lambda t: t.detach()))
        for total, grad in zip(sums, grads):
            total.add_(grad.double().square())
        segments += 1
    if not segments:
        raise ValueError("the text for the gradient statistics is too short: it holds no piece to predict")
    stats = {}
    for name, total in zip(names, sums):
        ms = (total / segments).float()
        if factored and ms.dim() == 2:
            stats[f"{name}.rows"], stats[f"{name}.cols"] = ms.mean(1), ms.mean(0)
        else:
            stats[name] = ms
    return stats


def mean_squares(model: LanguageModel, stats: dict[str, Tensor]) -> dict[str, Tensor]:
    """Full-size MS tensors (one per parameter) from full or factored statistics."""
    out = {}
    for name, param in model.named_parameters():
        if name in stats:
            ms = stats[name]
        elif f"{name}.rows" in stats and f"{name}.cols" in stats:
            rows, cols = stats[f"{name}.rows"], stats[f"{name}.cols"]
            ms = torch.outer(rows, cols) / rows.mean().clamp_min(torch.finfo(torch.float32).tiny)
        else:
            raise ValueError(f"the gradient statistics have nothing for {name}; were they made for another model?")
        if ms.shape != param.shape:
            raise ValueError(f"the gradient statistics of {name} have shape {tuple(ms.shape)}, "
                             f"the model's weight {tuple(param.shape)}; were they made for another model?")
        if not torch.isfinite(ms).all() or (ms < 0).any():
            raise ValueError(f"the gradient statistics of {name} hold negative, NaN or infinite values")
        out[name] = ms.to(param.device, torch.float32)
    return out


def save_statistics(directory: str | Path, stats: dict[str, Tensor], settings: DynamicSettings,
                    about: dict | None = None) -> Path:
    """Add (or replace) the statistics and settings in a checkpoint, atomically, keeping every other file."""
    from .checkpoint import load_checkpoint, rewrite_checkpoint

    mean_squares(load_checkpoint(directory).model, stats)  # refuse statistics that do not fit the model
    return rewrite_checkpoint(directory, {STATS_FILE: statistics_bytes(stats, settings, about)})


def statistics_bytes(stats: dict[str, Tensor], settings: DynamicSettings, about: dict | None = None) -> bytes:
    meta = {"format": STATS_FORMAT, "settings": json.dumps(settings.to_dict()), "about": json.dumps(about or {})}
    return safetensors.torch.save({k: v.detach().float().cpu().contiguous() for k, v in stats.items()}, meta)


def has_statistics(directory: str | Path) -> bool:
    from .checkpoint import MANIFEST_FILE, _readable_path

    try:
        manifest = json.loads((_readable_path(Path(directory)) / MANIFEST_FILE).read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return STATS_FILE in manifest


def read_statistics(directory: str | Path) -> tuple[dict[str, Tensor], dict]:
    """(statistics, {"settings": ..., "about": ...}) from a checkpoint, verified against its manifest."""
    from .checkpoint import CheckpointError, read_extra_file

    data = read_extra_file(directory, STATS_FILE)
    try:
        stats = safetensors.torch.load(data)
        header_len = int.from_bytes(data[:8], "little")  # safetensors: a u64 length, then the JSON header
        meta = json.loads(data[8 : 8 + header_len]).get("__metadata__") or {}
        if meta.get("format") != STATS_FORMAT:
            raise ValueError(f"not a {STATS_FORMAT} file")
        info = {"settings": json.loads(meta.get("settings", "{}")), "about": json.loads(meta.get("about", "{}"))}
    except Exception as error:  # noqa: BLE001 — any parse problem is one message naming the file
        raise CheckpointError(f"{Path(directory) / STATS_FILE}: not valid gradient statistics ({error})") from None
    return stats, info


# -- scoring -------------------------------------------------------------------------

class Cancelled(Exception):
    """Work given up before its end because nobody waits for it any more."""


class DynamicEvaluator:
    """Dynamic evaluation of texts with one model: the denominators √MS + ε are computed once here
    and shared; every `score` call adapts its own copy of the weights and leaves the model as it was.

    Safe to call from several threads at once (the model and the denominators are only read)."""

    def __init__(self, model: LanguageModel, tokenizer: Tokenizer, stats: dict[str, Tensor],
                 settings: DynamicSettings | None = None):
        self.model, self.tokenizer = model, tokenizer
        self.settings = settings or DynamicSettings()
        self.denominators = {}
        for name, ms in mean_squares(model, stats).items():
            rms = ms.sqrt()
            scale = rms.mean().clamp_min(torch.finfo(torch.float32).tiny)
            self.denominators[name] = rms + self.settings.eps * scale

    @classmethod
    def from_checkpoint(cls, checkpoint, **overrides) -> DynamicEvaluator:
        """For a loaded `Checkpoint` whose directory holds statistics; `overrides`: settings to change."""
        if checkpoint.path is None or not has_statistics(checkpoint.path):
            raise ValueError(f"{checkpoint.name} holds no gradient statistics for dynamic evaluation; add them "
                             f"with `lyricist eval --dynamic --stats-text TRAINING_TEXT --save-stats`")
        stats, _ = read_statistics(checkpoint.path)
        settings = DynamicSettings.for_checkpoint(checkpoint.path, **overrides)
        return cls(checkpoint.model, checkpoint.tokenizer, stats, settings)

    def score(self, text: str, cancelled: Callable[[], bool] = lambda: False) -> Score:
        """The same `Score` as `score_text`, each piece predicted by the weights adapted to the text before it.
        `cancelled()` is asked before each segment: True ends the work with `Cancelled` (its client has gone)."""
        s = self.settings
        original = dict(self.model.named_parameters())
        adapted = copy.deepcopy(self.model).eval()  # a per-call copy: the model is never written
        adapted.requires_grad_(True)
        names, params = zip(*adapted.named_parameters())
        trained = [original[name].detach() for name in names]  # θ₀, read only
        denominators = [self.denominators[name] for name in names]
        stream = _stream(adapted, self.tokenizer, text)
        logprobs = []
        for inputs, targets, state in _segments(stream, s.segment):
            if cancelled():
                raise Cancelled("the adapted score was cancelled")
            with torch.enable_grad():
                features = adapted.features(inputs, state.get())
                logits = adapted.logits(features.dropped[0])
                loss = F.cross_entropy(logits, targets)
                grads = torch.autograd.grad(loss, params)
            state.set(features.state.map(lambda t: t.detach()))
            logprobs.append(-F.cross_entropy(logits.detach().double(), targets, reduction="none"))
            with torch.no_grad():
                for param, grad, denominator, start in zip(params, grads, denominators, trained):
                    if s.decay:
                        param.lerp_(start, s.decay)  # θ + λ(θ₀ − θ); the gradient was taken before it
                    param.addcdiv_(grad, denominator, value=-s.lr)
        scores = torch.cat(logprobs).cpu() if logprobs else torch.zeros(0, dtype=torch.float64)
        return Score(stream.ids[1:], scores, len(text), count_units(text))


def dynamic_score(model: LanguageModel, tokenizer: Tokenizer, text: str, stats: dict[str, Tensor],
                  settings: DynamicSettings | None = None) -> Score:
    """One text, dynamically evaluated (see `DynamicEvaluator` to score several with one model)."""
    return DynamicEvaluator(model, tokenizer, stats, settings).score(text)


def describe(settings: DynamicSettings, stats_about: dict | None = None) -> dict:
    """What `lyricist eval --dynamic` adds to the figures, so a dynamic figure is never mistaken for a static one."""
    return {"evaluation": "dynamic", "dynamic": {**settings.to_dict(), "statistics": stats_about or {}}}


# -- the stream of segments ----------------------------------------------------------

class _Carry:
    def __init__(self):
        self.state = None

    def get(self):
        return self.state

    def set(self, state):
        self.state = state


class _Stream:
    def __init__(self, ids: list[int], tensor: Tensor):
        self.ids, self.tensor = ids, tensor


def _stream(model: LanguageModel, tokenizer: Tokenizer, text: str) -> _Stream:
    ids = tokenizer.encode(text, add_bos=True)
    return _Stream(ids, torch.tensor(ids, device=model.device).unsqueeze(0))


def _segments(stream: _Stream, segment: int):
    """(inputs (1, n), targets (n,), carry) for each segment; the caller sets the carried state."""
    carry = _Carry()
    tensor = stream.tensor
    for start in range(0, tensor.shape[1] - 1, segment):
        targets = tensor[0, start + 1 : start + 1 + segment]
        yield tensor[:, start : start + targets.shape[0]], targets, carry


def evaluate_checkpoint(checkpoint, text: str, stats_text: str | None = None, save_stats: bool = False,
                        **overrides) -> dict:
    """`lyricist eval --dynamic`: the static figures' JSON for a dynamic evaluation, plus what it was.

    The statistics come from `stats_text` (training text) when given, else from the checkpoint;
    `save_stats` stores them in the checkpoint, with the settings used, for the service."""
    settings = DynamicSettings.for_checkpoint(checkpoint.path, **overrides)
    if stats_text is not None:
        stats = gradient_statistics(checkpoint.model, checkpoint.tokenizer, stats_text, settings.segment)
        about = {"source": "computed at evaluation", "chars": len(stats_text), "segment": settings.segment}
        if save_stats:
            if checkpoint.path is None:
                raise ValueError("--save-stats needs a checkpoint directory")
            save_statistics(checkpoint.path, stats, settings, {**about, "source": "saved by lyricist eval"})
    else:
        if save_stats:
            raise ValueError("--save-stats needs --stats-text: the training text to compute the statistics on")
        evaluator = DynamicEvaluator.from_checkpoint(checkpoint, **overrides)
        stats_about = read_statistics(checkpoint.path)[1]["about"]
        return {**evaluator.score(text).metrics(), **describe(evaluator.settings, stats_about)}
    return {**dynamic_score(checkpoint.model, checkpoint.tokenizer, text, stats, settings).metrics(),
            **describe(settings, about)}
