"""Tuning the continuous cache (model/memory.py) on a validation text: its window, θ, λ and its share at a match.

The text is read once (as scoring reads it, the cache off); each position's probability of the true next piece
and its memory key are kept. For every window and θ of the grid, the cache's probability of the true piece is
p_cache(t) = Σ_{i in the window, x_{i+1} = x_{t+1}} softmax_i(θ k_t · k_i), and the cosine of the closest key;
for every λ, and every match setting (a cosine threshold and the share above it, or none), the text's loss is
Σ −log((1 − λ_t) p_model(t) + λ_t p_cache(t)). The best setting is kept only if it beats the cache off: a
cache that does not help is left off. The figures are the text read as one stream, as the validation figure is.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F

from .memory import CacheConfig
from .network import LanguageModel, evaluating, in_reading_order, slice_end
from .scoring import SLICE_TOKENS
from .tokenizer import Tokenizer

WINDOWS = (64, 128, 256, 512)  # 1024 scored 1% better on the songs at twice the memory (docs/memory.md)
THETAS = (0.05, 0.1, 0.2, 0.4, 0.8, 1.6)
LAMBDAS = (0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4)
MATCH_COSINES = (0.85, 0.9, 0.93, 0.95, 0.97)
MATCH_LAMBDAS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
CHUNK = 2048  # positions whose cache is computed at once


@torch.inference_mode()
def read_for_cache(model: LanguageModel, tokenizer: Tokenizer, text: str) -> tuple[torch.Tensor, torch.Tensor,
                                                                                      torch.Tensor]:
    """(log p_model of each true next piece (n,), each position's memory key (n, hidden), the pieces (n + 1,)),
    the text read with the cache off, in the model's reading order (a backward model's from its end)."""
    config = model.config
    off = dataclasses.replace(config, cache=CacheConfig())
    model.config = off
    try:
        ids = torch.tensor(in_reading_order(config, tokenizer.encode(text, add_bos=True)), device=model.device)
        logps, keys = [], []
        state, start = None, 0
        with evaluating(model):
            while start < len(ids) - 1:
                end = slice_end(start, len(ids) - 1, SLICE_TOKENS)
                features = model.features(ids[start:end].view(1, -1), state)
                state = features.state
                logits = model.decode(features.dropped[0], None).float()
                logps.append(-F.cross_entropy(logits, ids[start + 1:end + 1], reduction="none"))
                keys.append(features.keys[0].float())
                start = end
    finally:
        model.config = config
    return torch.cat(logps).cpu(), torch.cat(keys).cpu(), ids.cpu()


def cache_probabilities(keys: torch.Tensor, ids: torch.Tensor, window: int,
                        theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """p_cache of each position's true next piece (n,) over the window's earlier positions, and the cosine of the
    closest of them (n,; -1 where there is none)."""
    n = keys.shape[0]
    found = torch.zeros(n, dtype=torch.float64)
    closeness = torch.full((n,), -1.0)
    norms = keys.norm(dim=1)
    following = ids[1:n + 1]  # the piece after each position
    for a in range(0, n, CHUNK):
        b = min(n, a + CHUNK)
        first = max(0, a - window)
        scores = keys[a:b] @ keys[first:b].T  # (b - a, b - first)
        query = torch.arange(a, b).unsqueeze(1)
        key = torch.arange(first, b).unsqueeze(0)
        within = (key < query) & (key > query - window)  # as the ring holds them: the last window positions
        match = following[first:b].unsqueeze(0) == following[a:b].unsqueeze(1)
        weights = torch.softmax((theta * scores).masked_fill(~within, float("-inf")), dim=1).nan_to_num(0.0)
        found[a:b] = (weights * match).sum(dim=1).double()
        cosines = scores / (norms[a:b].unsqueeze(1) * norms[first:b].unsqueeze(0)).clamp_min(1e-12)
        closeness[a:b] = cosines.masked_fill(~within, -1.0).max(dim=1).values
    return found, closeness


def tune(model: LanguageModel, tokenizer: Tokenizer, text: str, windows=WINDOWS, thetas=THETAS,
         lambdas=LAMBDAS, match_cosines=MATCH_COSINES, match_lambdas=MATCH_LAMBDAS,
         log=print) -> tuple[CacheConfig, dict]:
    """The best cache setting on `text` (CacheConfig() when none beats the cache off) and the figures."""
    logp, keys, ids = read_for_cache(model, tokenizer, text)
    p_model = logp.double().exp()
    chars = len(text)
    off = float(-logp.double().sum()) / chars
    best, best_nats, tried = CacheConfig(), off, []
    for window in windows:
        for theta in thetas:
            p_cache, closeness = cache_probabilities(keys, ids, window, theta)
            recalled = torch.arange(len(p_cache)) > 0  # the first position has nothing to recall
            matches = [(1.0, 0.0)] + [(c, m) for c in match_cosines for m in match_lambdas]
            for lam in lambdas:
                found = []  # (nats, setting) for each match setting
                for match_cosine, match_lam in matches:
                    setting = CacheConfig(window, theta, lam, match_cosine, match_lam)
                    share = setting.share(closeness).double()
                    mixed = torch.where(recalled, (1 - share) * p_model + share * p_cache, p_model)
                    found.append((float(-mixed.log().sum()) / chars, setting))
                # the figures keep, per window, θ and λ, the cache without a match share and its best match share
                for nats, setting in (found[0], min(found[1:], key=lambda f: f[0], default=found[0])):
                    tried.append({**dataclasses.asdict(setting), "nats_per_char": nats})
                nats, setting = min(found, key=lambda f: f[0])
                if nats < best_nats:
                    best, best_nats = setting, nats
            here = min(tried[-2 * len(lambdas):], key=lambda t: t["nats_per_char"])
            log(f"window {window}, theta {theta}: best {here}")
    figures = {"chars": chars, "pieces": int(logp.numel()), "nats_per_char_off": off,
               "nats_per_char_best": best_nats, "best": dataclasses.asdict(best), "tried": tried}
    return best, figures


def save_cache_settings(directory: str | Path, cache: CacheConfig, about: dict) -> Path:
    """Store the cache's settings in a checkpoint's model config, atomically, keeping every other file; the
    figures that chose them go in `cache_tuning.json` beside them."""
    from .checkpoint import rewrite_checkpoint

    tried = ",\n  ".join(json.dumps(row) for row in about.get("tried", []))  # a row a line: diffs stay readable
    text = json.dumps({**about, "tried": []}, indent=1)
    figures = (text.replace('"tried": []', f'"tried": [\n  {tried}\n ]') + "\n").encode()
    return rewrite_checkpoint(directory, {TUNING_FILE: figures}, cache=cache)


TUNING_FILE = "cache_tuning.json"


def describe(figures: dict) -> str:
    best = figures["best"]
    if not best["lam"]:
        return f"the cache does not help on this text ({figures['nats_per_char_off']:.4f} nats/char): left off"
    gain = 1 - figures["nats_per_char_best"] / figures["nats_per_char_off"]
    match = (f", lambda {best['match_lam']} where the closest output's cosine is at least {best['match_cosine']}"
             if best["match_lam"] else "")
    return (f"cache window {best['window']}, theta {best['theta']}, lambda {best['lam']}{match}: "
            f"{figures['nats_per_char_best']:.4f} nats/char against {figures['nats_per_char_off']:.4f} off "
            f"({gain:.1%} less; {math.exp(figures['nats_per_char_off'] - figures['nats_per_char_best']):.3f}x)")
