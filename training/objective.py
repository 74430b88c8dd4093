"""What a training step minimises: the cross-entropy of the next piece, plus AR and TAR (Merity et al. 2017):
activation regularisation (α: the squared output the decoder reads, after dropout) and temporal activation
regularisation (β: the squared change of the last layer's raw output from one step to the next)."""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lyricist.model import LanguageModel
from lyricist.model.memory import State


class Objective(nn.Module):
    """A module of its own so that DistributedDataParallel sees one forward."""

    def __init__(self, model: LanguageModel, ar: float, tar: float, bf16: bool = False):
        super().__init__()
        self.model, self.ar, self.tar, self.bf16 = model, ar, tar, bf16

    def forward(self, inputs: Tensor, targets: Tensor, state: State) -> tuple[Tensor, Tensor, State]:
        """(loss, its cross-entropy alone, the state after the chunk, detached)."""
        # bf16: the products run in bfloat16, the weights, their updates and the loss stay float32
        with torch.autocast(inputs.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            features = self.model.features(inputs, state)
            logits = self.model.logits(features.dropped)
        dropped, hidden = features.dropped.float(), features.hidden.float()
        cross_entropy = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten())
        loss = cross_entropy
        if self.ar:
            loss = loss + self.ar * dropped.pow(2).mean()
        if self.tar and hidden.shape[1] > 1:
            loss = loss + self.tar * (hidden[:, 1:] - hidden[:, :-1]).pow(2).mean()
        return loss, cross_entropy.detach(), features.state.detached()


@functools.cache
def bf16_runs_on(device_type: str) -> bool:
    """Whether this machine runs the LSTM kernel under bfloat16 autocast. A CPU's oneDNN has no bfloat16 LSTM
    without AVX512-BF16 or AMX and fails at the first step, so a bf16 run is refused before it starts."""
    lstm = nn.LSTM(8, 8).to(device_type)
    try:
        with torch.autocast(device_type, dtype=torch.bfloat16):
            lstm(torch.zeros(2, 1, 8, device=device_type))
    except RuntimeError:
        return False
    return True
