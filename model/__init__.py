"""Lyricist's model package: the one place that knows the network.

Tokenizer, recurrent language model, sampling, generation and checkpoint I/O;
`training` and `app` build on it.
"""

from .checkpoint import Checkpoint, CheckpointError, load_checkpoint, load_forward_checkpoint, save_checkpoint
from .generation import generate
from .network import DropoutConfig, LanguageModel, ModelConfig
from .sampling import SamplingParams, sample
from .tokenizer import IncrementalDecoder, Tokenizer

__all__ = [
    "Checkpoint",
    "CheckpointError",
    "DropoutConfig",
    "IncrementalDecoder",
    "LanguageModel",
    "ModelConfig",
    "SamplingParams",
    "Tokenizer",
    "generate",
    "load_checkpoint",
    "load_forward_checkpoint",
    "sample",
    "save_checkpoint",
]
