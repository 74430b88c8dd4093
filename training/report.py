"""What a user sees next to a checkpoint: the training plot and the model card."""

from __future__ import annotations

import copy
import io
import json
import os
import platform

import torch

from lyricist.model import SamplingParams, generate
from lyricist.model.network import LanguageModel
from lyricist.model.tokenizer import Tokenizer

from .finetune import byte_fallback_note


def hardware() -> str:
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name()} (CUDA), torch {torch.__version__}"
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads, torch {torch.__version__}"


def plot(log: list[dict], chars_per_token: float) -> bytes:
    """Training and validation curves, in nats per character, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [e for e in log if e["event"] == "train"]
    val = [e for e in log if e["event"] == "eval"]
    figure, axis = plt.subplots(figsize=(7, 4), dpi=100)
    axis.plot([e["tokens"] for e in train], [e["loss"] / chars_per_token for e in train], label="training (estimate)",
              linewidth=1)
    axis.plot([e["tokens"] for e in val], [e["val"]["nats_per_char"] for e in val], "o-", label="validation")
    axis.set_xlabel("training tokens")
    axis.set_ylabel("nats per character")
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return buffer.getvalue()


def samples(model: LanguageModel, tokenizer: Tokenizer, count: int, tokens: int = 120) -> list[str]:
    params = [SamplingParams(temperature=0.8, seed=seed) for seed in range(count)]
    if next(model.parameters()).device.type != "cpu":  # the sampler's generators live on the CPU
        model = copy.deepcopy(model).cpu()
    # A backward model writes a text from its end: its pieces are shown in the order they read.
    order = reversed if model.config.direction == "backward" else iter
    return ["".join(order(list(generate(model, tokenizer, "", tokens, p)))) for p in params]


def _fine_tune_rows(facts: dict) -> str:
    """The card's rows on the base of a fine-tune (training/finetune.py)."""
    base, before = facts["fine_tuned_from"], facts.get("base_val_nats_per_char")
    own = base.get("val_nats_per_char")
    own = f"; its own validation: {own:.4f} nats/char on {base.get('corpus')}" if own is not None else ""
    after = facts.get("val_nats_per_char")
    compared = (f"| this validation text | base {before:.4f} nats/char, fine-tuned {after:.4f} "
                f"({after / before:.3f}×) |\n" if before and after is not None else "")
    return (f"| fine-tuned from | `{base['name']}` ({base['path']}; weights sha256 `{base['weights_sha256'][:16]}…`, "
            f"manifest sha256 `{base['manifest_sha256'][:16]}…`{own}) |\n"
            f"{compared}| byte fallback | {byte_fallback_note(facts['byte_fallback_share'])} |\n")


def _weights_row(facts: dict) -> str:
    """Which weights the checkpoint holds, when training kept a moving average of them (optim.ema_decay)."""
    if "weights" not in facts:
        return ""
    raw, ema, decay = facts["val_raw_nats_per_char"], facts["val_ema_nats_per_char"], facts["ema_decay"]
    if facts["weights"] == "ema":
        which = (f"the exponential moving average of the weights (decay {decay}): {ema:.4f} nats/char on "
                 f"validation, against {raw:.4f} for the trained weights")
    else:
        which = (f"the trained weights: {raw:.4f} nats/char on validation, against {ema:.4f} for their "
                 f"moving average (decay {decay})")
    return f"| weights | {which} |\n"


def model_card(name: str, facts: dict, config: dict, command: str, texts: list[str]) -> str:
    val = facts.get("val") or {}
    figures = "\n".join(f"| {key} | {value:.4f} |" if isinstance(value, float) else f"| {key} | {value} |"
                        for key, value in val.items())
    shown = "\n\n".join(f"```text\n{text}\n```" for text in texts)
    base = facts.get("fine_tuned_from")
    how = f"fine-tuned by Lyricist from `{base['name']}`" if base else "trained by Lyricist"
    return f"""# {name}

A {config['model']['layers']}-layer {config['model']['cell'].upper()} language model {how}.

| | |
|---|---|
| corpus | {facts['corpus']} ({facts['corpus_chars']:,} characters, sha256 `{facts['corpus_sha256'][:16]}…`) |
| split | {facts.get('split', 'first 90% of the characters for training, last 10% for validation')} |
{_fine_tune_rows(facts) if base else ""}| parameters | {facts['parameters']:,} |
| steps | {facts['steps']:,} ({facts['epochs']:.2f} epochs, {facts['tokens_seen']:,} tokens) |
{_weights_row(facts)}| training time | {facts['train_minutes']:.1f} minutes |
| hardware | {facts['hardware']}; {facts['processes']} process(es) |
| finished | {facts['finished']} ({facts.get('stop_reason', 'running')}) |
| command | `{command}` |

## Validation figures (whole validation text, state carried through it)

| metric | value |
|---|---|
{figures}

## Samples (temperature 0.8, seeds 0–{max(len(texts) - 1, 0)}, from the start of a text)

{shown}

## Configuration

```json
{json.dumps(config, indent=2)}
```
"""


def averaging_facts(log: list[dict], ema_decay: float) -> dict:
    """Which weights the checkpoint carries, when a moving average was kept beside them."""
    evals = [e for e in log if e["event"] == "eval"]
    best = min(evals, key=lambda e: e["val"]["nats_per_char"]) if evals else {}
    if not ema_decay or "val_ema" not in best:  # (a fine-tune's base, before any step)
        return {}
    return {
        "weights": best["weights"],  # "ema": the checkpoint holds the moving average of the weights
        "ema_decay": ema_decay,
        "val_raw_nats_per_char": best["val_raw"]["nats_per_char"],
        "val_ema_nats_per_char": best["val_ema"]["nats_per_char"],
    }


def fine_tune_facts(fine_tune: dict, evals: list[dict]) -> dict:
    return {
        "fine_tuned_from": fine_tune["base"],
        "base_val_nats_per_char": evals[0]["nats_per_char"] if evals else None,  # step 0: the base itself
        "byte_fallback_share": fine_tune["byte_fallback_share"],
    }
