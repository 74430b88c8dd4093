"""What a user sees next to a checkpoint: the training plot and the model card."""

from __future__ import annotations

import io
import json
import os
import platform

import torch

from lyricist.model import SamplingParams, generate
from lyricist.model.network import LanguageModel
from lyricist.model.tokenizer import Tokenizer


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
    return ["".join(generate(model, tokenizer, "", tokens, p)) for p in params]


def model_card(name: str, facts: dict, config: dict, command: str, texts: list[str]) -> str:
    val = facts.get("val") or {}
    figures = "\n".join(f"| {key} | {value:.4f} |" if isinstance(value, float) else f"| {key} | {value} |"
                        for key, value in val.items())
    shown = "\n\n".join(f"```text\n{text}\n```" for text in texts)
    return f"""# {name}

A {config['model']['layers']}-layer {config['model']['cell'].upper()} language model trained by Lyricist.

| | |
|---|---|
| corpus | {facts['corpus']} ({facts['corpus_chars']:,} characters, sha256 `{facts['corpus_sha256'][:16]}…`) |
| split | first 90% of the characters for training, last 10% for validation |
| parameters | {facts['parameters']:,} |
| steps | {facts['steps']:,} ({facts['epochs']:.2f} epochs, {facts['tokens_seen']:,} tokens) |
| training time | {facts['train_minutes']:.1f} minutes |
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
