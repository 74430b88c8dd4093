"""Weight averaging, two ways (docs/training.md): NT-ASGD (Merity et al. 2017: SGD until validation stops
improving, then averaged SGD) and an exponential moving average of the weights (optim.ema_decay), each evaluated
by putting its weights in the model for the evaluation's length."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from .config import OptimSettings


def make_optimizer(o: OptimSettings, params, averaging: bool) -> torch.optim.Optimizer:
    """AdamW; or, for NT-ASGD, SGD until `averaging`, then averaged SGD."""
    if o.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=o.lr, betas=o.betas, weight_decay=o.weight_decay)
    if averaging:
        return torch.optim.ASGD(params, lr=o.lr, t0=0, lambd=0.0, weight_decay=o.weight_decay)
    return torch.optim.SGD(params, lr=o.lr, weight_decay=o.weight_decay)


def nt_asgd_switches(o: OptimSettings, averaging: bool, val_history: Sequence[float]) -> bool:
    """Whether NT-ASGD starts averaging now: validation is no better than it was `nonmono` evaluations ago."""
    return (o.optimizer == "nt-asgd" and not averaging and len(val_history) > o.nonmono
            and val_history[-1] > min(val_history[: -o.nonmono]))


def asgd_average(model: nn.Module, optimizer: torch.optim.Optimizer) -> list[Tensor | None]:
    """Averaged SGD's average of each weight (None where it has none yet)."""
    return [optimizer.state.get(param, {}).get("ax") for param in model.parameters()]


def update_moving_average(average: list[Tensor] | None, model: nn.Module, decay: float,
                          updates: int) -> tuple[list[Tensor], int]:
    """The exponential moving average after one more step, and its count of steps, debiased as Adam debiases
    its moments: the average of every step's weights so far, step i weighted by decay^(steps since i), the
    weights summing to 1 (so early on it is not pulled towards the initial weights)."""
    params = [param.detach() for param in model.parameters()]
    if average is None:
        return [param.clone() for param in params], 1
    updates += 1
    torch._foreach_lerp_(average, params, (1 - decay) / (1 - decay**updates))
    return average, updates


@contextmanager
def weights_replaced(model: nn.Module, replacements: Sequence[Tensor | None] | None) -> Iterator[None]:
    """The model's weights replaced by `replacements` (None keeps a weight; None for all keeps them all) until
    the block ends."""
    if replacements is None:
        yield
        return
    params = list(model.parameters())
    saved = [param.detach().clone() for param in params]
    with torch.no_grad():
        for param, replacement in zip(params, replacements):
            if replacement is not None:
                param.copy_(replacement)
    try:
        yield
    finally:
        with torch.no_grad():
            for param, kept in zip(params, saved):
                param.copy_(kept)
