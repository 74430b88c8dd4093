"""Small builders the tests share."""

from pathlib import Path

import torch

from model import DropoutConfig, LanguageModel, ModelConfig

ROOT = Path(__file__).resolve().parents[1]
SHAKESPEARE = ROOT / "data" / "tinyshakespeare" / "input.txt"

def tiny_model(vocab_size: int = 50, cell: str = "lstm", seed: int = 0, **overrides) -> LanguageModel:
    torch.manual_seed(seed)
    fields = dict(vocab_size=vocab_size, cell=cell, layers=2, embedding_size=12, hidden_size=16)
    fields.update(overrides)
    if isinstance(fields.get("dropout"), dict):
        fields["dropout"] = DropoutConfig(**fields["dropout"])
    return LanguageModel(ModelConfig(**fields))
