import math

import pytest
import torch

from lyricist.model import SamplingParams, sample
from lyricist.model.sampling import filter_logits, make_generator

KNOWN_PROBS = torch.tensor([0.5, 0.2, 0.15, 0.1, 0.05])


def known_logits(batch=1):
    return KNOWN_PROBS.log().repeat(batch, 1)


def draws(params: SamplingParams, logits: torch.Tensor, n: int, seed=0) -> torch.Tensor:
    """n draws of one row, as n independent rows of one batch (each its own generator)."""
    rows = logits.expand(n, -1)
    generators = [make_generator(seed * 1_000_003 + i) for i in range(n)]
    return sample(rows, [params] * n, generators)


def kept(params: SamplingParams, logits=None) -> set[int]:
    z = filter_logits(known_logits() if logits is None else logits, [params])
    return set(torch.nonzero(z[0] > float("-inf")).flatten().tolist())


def chi_square_p_value(counts: torch.Tensor, probs: torch.Tensor) -> float:
    expected = probs * counts.sum()
    statistic = ((counts - expected) ** 2 / expected).sum()
    dof = torch.tensor((len(probs) - 1) / 2.0, dtype=torch.float64)
    return torch.special.gammaincc(dof, statistic.double() / 2).item()


def test_temperature_zero_is_argmax():
    logits = torch.randn(64, 300, generator=torch.Generator().manual_seed(0))
    params = [SamplingParams(temperature=0, top_k=5, top_p=0.3, min_p=0.2)] * 64
    assert torch.equal(sample(logits, params, [None] * 64), logits.argmax(dim=-1))


@pytest.mark.parametrize("k", [1, 2, 7])
def test_top_k_never_leaves_the_k(k):
    logits = torch.randn(1, 40, generator=torch.Generator().manual_seed(k))
    top = set(logits[0].topk(k).indices.tolist())
    chosen = set(draws(SamplingParams(top_k=k, temperature=3.0), logits, 2000).tolist())
    assert chosen <= top
    assert len(chosen) == k  # and at temperature 3 all of them turn up


@pytest.mark.parametrize("top_p, expected", [(0.3, {0}), (0.5, {0}), (0.55, {0, 1}), (0.8, {0, 1, 2}),
                                             (0.9, {0, 1, 2, 3}), (1.0, {0, 1, 2, 3, 4})])
def test_top_p_keeps_the_smallest_set_reaching_p(top_p, expected):
    assert kept(SamplingParams(top_p=top_p)) == expected
    assert set(draws(SamplingParams(top_p=top_p), known_logits(), 500).tolist()) == expected


@pytest.mark.parametrize("min_p, expected", [(0.0, {0, 1, 2, 3, 4}), (0.15, {0, 1, 2, 3}), (0.25, {0, 1, 2}),
                                             (0.35, {0, 1}), (0.9, {0})])
def test_min_p_keeps_tokens_with_probability_at_least_min_p_times_the_top(min_p, expected):
    assert kept(SamplingParams(min_p=min_p)) == expected
    assert set(draws(SamplingParams(min_p=min_p), known_logits(), 500).tolist()) == expected


def test_filters_apply_after_temperature():
    # At temperature 2 the distribution flattens, so top-p needs more tokens.
    assert kept(SamplingParams(top_p=0.6)) == {0, 1}
    flatter = torch.softmax(KNOWN_PROBS.log() / 2, dim=0)
    assert flatter[0] + flatter[1] < 0.6 < flatter[:3].sum()
    rows = draws(SamplingParams(top_p=0.6, temperature=2.0), known_logits(), 2000)
    assert set(rows.tolist()) == {0, 1, 2}


def test_seeded_row_is_reproducible_whatever_rows_surround_it():
    mine = SamplingParams(temperature=1.2, top_k=30, noise=0.3, seed=42)
    logits = torch.randn(50, 100, generator=torch.Generator().manual_seed(1))

    def run(batch_builder):
        generator = make_generator(42)
        choices = []
        for step in range(50):
            others, position = batch_builder(step)
            params = others[:position] + [mine] + others[position:]
            generators = [make_generator(step * 7 + j) for j in range(len(others))]
            generators = generators[:position] + [generator] + generators[position:]
            batch = torch.randn(len(params), 100)
            batch[position] = logits[step]
            choices.append(sample(batch, params, generators)[position].item())
        return choices

    alone = run(lambda step: ([], 0))
    crowded = run(lambda step: ([SamplingParams(temperature=0), SamplingParams(top_p=0.2, seed=1),
                                 SamplingParams(min_p=0.5, noise=2.0)], step % 4))
    other_crowd = run(lambda step: ([SamplingParams(temperature=5.0, repetition_penalty=3.0)] * 9, 9 - step % 10))
    assert alone == crowded == other_crowd
    assert len(set(alone)) > 5  # it really sampled


@pytest.mark.parametrize("params, temperature", [
    (SamplingParams(temperature=1.0), 1.0),
    (SamplingParams(temperature=2.0), 2.0),
    (SamplingParams(temperature=0.0, noise=1.0), 1.0),  # Gumbel-max: an exact sample
    (SamplingParams(temperature=0.0, noise=0.5), 0.5),  # argmax(z + s*g) samples at temperature s
])
def test_draws_follow_the_distribution(params, temperature):
    logits = torch.tensor([[2.0, 1.0, 0.5, 0.0, -0.5, -1.0, -2.0, 0.3]])
    chosen = draws(params, logits, 20000, seed=3)
    counts = torch.bincount(chosen, minlength=8).double()
    probs = torch.softmax(logits[0].double() / temperature, dim=0)
    assert chi_square_p_value(counts, probs) > 1e-3
    assert chi_square_p_value(counts, torch.softmax(logits[0].double() / 3.0, dim=0)) < 1e-6  # it can fail


def test_repetition_penalty_divides_positive_and_multiplies_negative_logits_of_seen_tokens():
    greedy = SamplingParams(temperature=0, repetition_penalty=2.0)
    seen = torch.tensor([[True, False], [True, False]])
    logits = torch.tensor([[2.0, 1.5], [-1.0, -1.5]])  # seen token 0 becomes 1.0 and -2.0
    assert sample(logits, [greedy] * 2, [None] * 2, seen).tolist() == [1, 1]
    assert sample(logits, [SamplingParams(temperature=0)] * 2, [None] * 2, seen).tolist() == [0, 0]
    assert sample(logits, [greedy] * 2, [None] * 2, ~seen).tolist() == [0, 0]


def test_noise_explores_at_temperature_zero():
    logits = torch.tensor([[1.0, 0.9, 0.8]])
    assert set(draws(SamplingParams(temperature=0), logits, 200).tolist()) == {0}
    assert set(draws(SamplingParams(temperature=0, noise=1.0), logits, 200).tolist()) == {0, 1, 2}


TINIEST = 5e-324  # the smallest positive double: dividing by it, or by its float32 rounding (0), overflows
EXTREMES = [
    ({"temperature": TINIEST}, "argmax"), ({"temperature": 1e-40}, "argmax"),
    ({"temperature": TINIEST, "top_p": 0.9, "min_p": 0.5}, "argmax"),
    ({"top_p": TINIEST}, "argmax"), ({"temperature": 5.0, "top_p": TINIEST}, "argmax"),
    ({"min_p": 1 - 1e-12}, "argmax"),
    ({"top_k": 3, "noise": 1e308}, "top3"), ({"top_k": 3, "noise": 1e38}, "top3"),
    ({"temperature": TINIEST, "top_k": 2, "noise": 1e308}, "top2"),
    ({"noise": 1e308}, "any"), ({"temperature": 0, "noise": 1e308}, "any"),
    ({"repetition_penalty": TINIEST}, "best seen"), ({"temperature": 0, "repetition_penalty": TINIEST}, "best seen"),
    ({"temperature": 0, "repetition_penalty": 1e308}, "best unseen"),
]


@pytest.mark.parametrize("settings, allowed", EXTREMES)
def test_extreme_settings_reach_their_limit_and_never_a_token_out_of_it(settings, allowed):
    """At the edges of the valid ranges the choice is what the limit of the formulas gives: no NaN
    picks a token the filters left out (it once picked the last token of the vocabulary)."""
    logits = torch.randn(64, 300, generator=torch.Generator().manual_seed(3)) * 3
    seen = torch.zeros_like(logits, dtype=torch.bool)
    seen[:, :100] = True  # of the seen tokens the penalty favours positive logits as 1/penalty grows
    limit = {
        "argmax": lambda: [{i} for i in logits.argmax(-1).tolist()],
        "top3": lambda: [set(row) for row in logits.topk(3).indices.tolist()],
        "top2": lambda: [set(row) for row in logits.topk(2).indices.tolist()],
        "any": lambda: [set(range(300))] * 64,
        "best seen": lambda: [{i} for i in logits[:, :100].argmax(-1).tolist()],
        "best unseen": lambda: [{i + 100} for i in logits[:, 100:].argmax(-1).tolist()],
    }[allowed]()
    generators = [make_generator(i) for i in range(64)]
    chosen = sample(logits, [SamplingParams(**settings)] * 64, generators, seen).tolist()
    assert all(choice in allowed_set for choice, allowed_set in zip(chosen, limit)), (chosen, limit)
    if allowed == "any":
        assert len(set(chosen)) > 20  # loud noise spreads the choice over the vocabulary


@pytest.mark.parametrize("field, value, allowed", [
    ("temperature", -0.1, "between 0 and 5"), ("temperature", 5.5, "between 0 and 5"),
    ("temperature", math.nan, "between 0 and 5"), ("top_k", -1, ">= 0"), ("top_p", 0.0, r"\(0, 1\]"),
    ("top_p", 1.5, r"\(0, 1\]"), ("min_p", 1.0, r"\[0, 1\)"), ("repetition_penalty", 0.0, "> 0"),
    ("noise", -1.0, ">= 0"), ("noise", math.inf, "finite"), ("seed", -5, "between 0"),
])
def test_out_of_range_settings_are_refused_with_field_and_range(field, value, allowed):
    with pytest.raises(ValueError, match=f"{field} must be .*{allowed}.*got"):
        SamplingParams(**{field: value})
