"""How far a run is through its budget, and the learning rate there: a linear warm-up, then a cosine decay to
lr * min_lr_ratio over the whole budget (its steps, its epochs or its minutes, whichever runs out first)."""

from __future__ import annotations

import math

from .config import OptimSettings


def budget_used(o: OptimSettings, step: int, elapsed_s: float, epoch_progress: float) -> float:
    """The share of the budget spent: the largest of the epochs', the steps' and the minutes' shares."""
    fractions = [epoch_progress / o.max_epochs]
    if o.max_steps:
        fractions.append(step / o.max_steps)
    if o.max_minutes:
        fractions.append(elapsed_s / (o.max_minutes * 60))
    return max(fractions)


def planned_steps(o: OptimSettings, steps_per_epoch: float) -> int:
    by_epochs = int(o.max_epochs * steps_per_epoch)
    return min(by_epochs, o.max_steps) if o.max_steps else by_epochs


def lr_factor(o: OptimSettings, step: int, used: float) -> float:
    """The learning rate's share of optim.lr at `step`, with `used` of the budget spent."""
    warmup = min(1.0, (step + 1) / o.warmup_steps) if o.warmup_steps else 1.0
    if o.schedule == "constant":
        return warmup
    progress = min(1.0, used)
    return warmup * (o.min_lr_ratio + (1 - o.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))
