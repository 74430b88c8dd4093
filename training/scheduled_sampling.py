"""Scheduled sampling (Bengio et al. 2015), in parallel: some inputs of a chunk become the model's own
prediction of them, with a probability that grows on a schedule (docs/training.md)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from lyricist.model import LanguageModel
from lyricist.model.memory import State

from .config import OptimSettings


def teacher_forcing_probability(o: OptimSettings, step: int) -> float:
    """The chance that an input is the true token at this step."""
    if o.scheduled_sampling == "none":
        return 1.0
    if o.scheduled_sampling == "linear":
        value = o.ss_k - o.ss_c * step
    elif o.scheduled_sampling == "exponential":
        value = o.ss_k**step
    else:  # inverse sigmoid
        value = o.ss_k / (o.ss_k + math.exp(min(step / o.ss_k, 700)))
    return min(1.0, max(o.ss_min, value))


def mix_in_predictions(model: LanguageModel, inputs: Tensor, state: State, teacher_forcing: float) -> Tensor:
    """`inputs` with each piece after the first replaced, with probability 1 - teacher_forcing, by a sample
    of the model's prediction of it from the true pieces before it."""
    if teacher_forcing >= 1 or inputs.shape[1] < 2:
        return inputs
    with torch.no_grad():
        logits, _ = model(inputs, state)
        predicted = torch.multinomial(torch.softmax(logits[:, :-1].flatten(0, 1), -1), 1).view(inputs.shape[0], -1)
    replace = torch.rand(predicted.shape, device=inputs.device) >= teacher_forcing
    mixed = inputs.clone()
    mixed[:, 1:] = torch.where(replace, predicted, inputs[:, 1:])
    return mixed
