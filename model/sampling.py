"""Choosing the next token for a batch, every row with its own settings and generator.

The formulas (docs/sampling.md): repetition penalty on the raw logits, then
temperature, then top-k, top-p and min-p filters, then Gumbel noise of scale
`noise`, then the choice: argmax at temperature 0, otherwise one draw from the
softmax by inverse CDF with a uniform from the row's own generator. No row's
result depends on another row's settings or random numbers.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

MAX_TEMPERATURE = 5.0
MAX_SEED = 2**63 - 1


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 1.0  # 0 = argmax
    top_k: int = 0  # 0 = off
    top_p: float = 1.0  # 1 = off
    min_p: float = 0.0  # 0 = off
    repetition_penalty: float = 1.0  # 1 = off
    noise: float = 0.0  # scale of Gumbel noise on the logits; 0 = off
    seed: int | None = None

    def __post_init__(self):
        rules = (
            ("temperature", 0 <= self.temperature <= MAX_TEMPERATURE, f"between 0 and {MAX_TEMPERATURE:g}"),
            ("top_k", isinstance(self.top_k, int) and self.top_k >= 0, "an integer >= 0 (0 = off)"),
            ("top_p", 0 < self.top_p <= 1, "in (0, 1] (1 = off)"),
            ("min_p", 0 <= self.min_p < 1, "in [0, 1) (0 = off)"),
            ("repetition_penalty", 0 < self.repetition_penalty < float("inf"), "> 0 (1 = off)"),
            ("noise", 0 <= self.noise < float("inf"), "a finite number >= 0 (0 = off)"),
            ("seed", self.seed is None or 0 <= self.seed <= MAX_SEED, f"between 0 and {MAX_SEED}"),
        )
        problems = [f"{name} must be {rule}, got {getattr(self, name)!r}" for name, ok, rule in rules if not ok]
        if problems:
            raise ValueError("; ".join(problems))

    @property
    def is_greedy(self) -> bool:
        return self.temperature == 0 and self.noise == 0


def random_seed() -> int:
    return random.SystemRandom().randrange(2**31)


def make_generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def keep_only(logits: Tensor, pieces: Sequence[int]) -> Tensor:
    """`logits` (..., vocab) with every piece but `pieces` ruled out (-inf): the pieces a prompt's unread end
    allows next (Tokenizer.encode_prompt)."""
    allowed = torch.zeros(logits.shape[-1], dtype=torch.bool, device=logits.device)
    allowed[list(pieces)] = True
    return logits.masked_fill(~allowed, float("-inf"))


def sample(
    logits: Tensor,
    params: Sequence[SamplingParams],
    generators: Sequence[torch.Generator | None],
    seen: Tensor | None = None,
) -> Tensor:
    """Pick one token per row of `logits` (batch, vocab).

    `generators[i]` supplies row i's random numbers (greedy rows may pass None);
    `seen` (batch, vocab, bool) marks the tokens already in each row's context,
    for the repetition penalty.
    """
    z = logits.float()
    if seen is not None and any(p.repetition_penalty != 1 for p in params):
        z = penalise(z, seen, _column(z, [p.repetition_penalty for p in params]))
    if all(p.is_greedy for p in params):
        return z.argmax(dim=-1)

    # With each row's best at 0, dividing by even the tiniest temperature gives no inf - inf.
    temperature = _column(z, [p.temperature or 1.0 for p in params]).clamp_min(torch.finfo(z.dtype).tiny)
    z = filter_logits(_best_at_zero(z) / temperature, params)
    if any(p.noise > 0 for p in params):
        z = _add_noise(z, _column(z, [p.noise for p in params]), _gumbel_rows(z, params, generators))
    choice = z.argmax(dim=-1)
    draw_rows = [i for i, p in enumerate(params) if p.temperature > 0]
    if draw_rows:
        # Each row's generator is a CPU one whatever the device (make_generator): the same seed draws the same
        # numbers on any device, and they go to the logits' device to be used.
        uniforms = torch.cat([torch.rand(1, generator=generators[i], dtype=torch.float64) for i in draw_rows])
        uniforms = uniforms.to(z.device)
        choice[draw_rows] = inverse_cdf(torch.softmax(z[draw_rows].double(), dim=-1), uniforms)
    return choice


def penalise(z: Tensor, seen: Tensor, theta: Tensor) -> Tensor:
    """The repetition penalty (CTRL): logits of tokens already seen divided by theta when positive, multiplied
    when negative. Past 1e30 either way the penalty has done all it can; the bounds keep z finite."""
    theta = theta.clamp(1e-30, 1e30)
    return torch.where(seen, torch.where(z > 0, z / theta, z * theta), z)


def gumbel(shape: tuple[int, ...] | torch.Size, generator: torch.Generator, dtype: torch.dtype = torch.float32
           ) -> Tensor:
    """Standard Gumbel noise, -log(-log U), from `generator`."""
    return -torch.log(-torch.log(torch.rand(shape, generator=generator, dtype=dtype).clamp_min(1e-20)))


def inverse_cdf(probs: Tensor, uniforms: Tensor, total: Tensor | None = None) -> Tensor:
    """One draw per row of `probs` (unnormalised: `total` is each row's sum, by default the CDF's end) with the
    row's uniform in [0, 1)."""
    cdf = probs.cumsum(dim=-1)
    target = (uniforms * (cdf[:, -1] if total is None else total)).unsqueeze(1)
    index = torch.searchsorted(cdf, target, right=True).squeeze(1)
    # Rounding can put the target at the very end; fall back to the last token with mass.
    last_possible = probs.shape[-1] - 1 - (probs > 0).flip(-1).int().argmax(dim=-1)
    return torch.minimum(index, last_possible)


def filter_logits(z: Tensor, params: Sequence[SamplingParams]) -> Tensor:
    """Set to -inf every logit that top-k, then top-p, then min-p leaves out."""
    if any(p.top_k > 0 or p.top_p < 1 for p in params):
        sorted_z, order = z.sort(dim=-1, descending=True)
        rank = torch.arange(z.shape[-1], device=z.device).expand_as(z)
        top_k = torch.tensor([p.top_k or z.shape[-1] for p in params], device=z.device).unsqueeze(1)
        keep = rank < top_k
        sorted_z = sorted_z.masked_fill(~keep, float("-inf"))
        if any(p.top_p < 1 for p in params):
            probs = torch.softmax(sorted_z, dim=-1)
            mass_before = probs.cumsum(dim=-1) - probs
            top_p = _column(z, [p.top_p if p.top_p < 1 else 2.0 for p in params])
            keep &= (mass_before < top_p) | (rank == 0)  # the best token always stays
        z = z.masked_fill(~torch.zeros_like(keep).scatter(1, order, keep), float("-inf"))
    if any(p.min_p > 0 for p in params):
        probs = torch.softmax(z, dim=-1)
        floor = _column(z, [p.min_p for p in params]) * probs.max(dim=-1, keepdim=True).values
        z = z.masked_fill(probs < floor, float("-inf"))
    return z


def _add_noise(z: Tensor, noise: Tensor, gumbel: Tensor) -> Tensor:
    """z + noise * gumbel on the tokens the filters kept, each row's best shifted to 0.

    Loud noise (> 1) is added as noise * (z / noise + gumbel), which is finite whatever its
    size: noise * gumbel would overflow to ties of +inf, and a tie goes to the lowest index.
    """
    noise = noise.clamp_max(torch.finfo(z.dtype).max)
    loud = noise > 1
    noisy = torch.where(loud, z / noise + gumbel, z + noise * gumbel)
    noisy = noisy.masked_fill(z == float("-inf"), float("-inf"))  # what the filters left out stays out
    noisy = noisy - noisy.amax(dim=-1, keepdim=True)
    return torch.where(loud, noisy * noise, noisy)


def _best_at_zero(z: Tensor) -> Tensor:
    """Shift each row so its best score is 0. Where scores overflowed to +inf, those tie as the
    best and the rest drop out: the limit the scores were heading to."""
    top = z.amax(dim=-1, keepdim=True)
    return torch.where(top.isinf(), torch.where(z == top, 0.0, float("-inf")), z - top)


def _gumbel_rows(z: Tensor, params: Sequence[SamplingParams], generators) -> Tensor:
    rows = [gumbel((z.shape[-1],), g) if p.noise > 0 else torch.zeros(z.shape[-1])
            for p, g in zip(params, generators)]
    return torch.stack(rows).to(z.device)


def _column(like: Tensor, values: list[float]) -> Tensor:
    return torch.tensor(values, dtype=like.dtype, device=like.device).unsqueeze(1)
