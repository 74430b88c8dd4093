"""Fine-tuning: start from a trained checkpoint's tokenizer and weights (`lyricist train --from DIR`).

What is checked before anything is written, the base's identity recorded in
the new checkpoint, and how much of the corpus the base's vocabulary lacks.
The preset itself is `config.FINE_TUNING`; docs/training.md, "Fine-tuning".
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lyricist.model import Checkpoint, CheckpointError, Tokenizer, load_checkpoint
from lyricist.model.checkpoint import MANIFEST_FILE, TOKENIZER_FILE, WEIGHTS_FILE

from .config import MIN_FINE_TUNING_BYTES, TrainConfig, fine_tuning_defaults, load_config
from .data import Corpus, CorpusError, holdout_split

# What the weights' shapes depend on: a fine-tune keeps all of it (dropout may change).
ARCHITECTURE = ("vocab_size", "cell", "layers", "embedding_size", "hidden_size", "tie_weights")
OTHER_FORMATS = (".pt", ".pth", ".bin", ".ckpt", ".h5", ".onnx", ".gguf", ".pkl")
BYTE_PIECE = re.compile(r"<0x[0-9A-F]{2}>")


@dataclass
class Base:
    checkpoint: Checkpoint
    identity: dict[str, Any]  # what the new checkpoint records about where it started


def load_base(path: str | Path) -> Base:
    """The checkpoint to fine-tune from, verified; anything else is one CheckpointError saying why."""
    path = Path(path)
    where = f"--from {path}"
    if path.is_file():
        raise CheckpointError(f"{where} is a file, not a checkpoint directory (one that `lyricist train` wrote)")
    if not path.exists() and not path.with_name(f".{path.name}.previous").is_dir():
        raise CheckpointError(f"{where}: no such directory")
    if path.is_dir() and not (path / MANIFEST_FILE).exists():
        foreign = sorted(p.name for p in path.iterdir() if p.suffix.lower() in OTHER_FORMATS)
        if foreign:
            raise CheckpointError(f"{where} holds {foreign[0]}, another format: lyricist fine-tunes only its "
                                  f"own checkpoints (manifest.json, config.json, model.safetensors, tokenizer.model)")
    for _ in range(3):  # a training run may be saving over the base: read one consistent version
        before = _manifest_bytes(path)
        try:
            checkpoint = load_checkpoint(path)
        except CheckpointError as error:
            raise CheckpointError(f"{where} is not a usable checkpoint: {error}") from None
        manifest = _manifest_bytes(path)
        if manifest == before and manifest is not None:
            break
    else:
        raise CheckpointError(f"{where} kept changing while it was read (a run saving into it?); try again")
    files = json.loads(manifest)["files"]
    facts = checkpoint.training
    identity = {
        "name": path.resolve().name,
        "path": str(path),
        "weights_sha256": files[WEIGHTS_FILE]["sha256"],
        "tokenizer_sha256": files[TOKENIZER_FILE]["sha256"],
        "manifest_sha256": hashlib.sha256(manifest).hexdigest(),
        "corpus": facts.get("corpus"),
        "steps": facts.get("steps"),
        "val_nats_per_char": facts.get("val_nats_per_char"),
    }
    return Base(checkpoint, identity)


def same_base(saved: dict[str, Any], base: Base) -> bool:
    return all(saved.get(key) == base.identity[key] for key in ("weights_sha256", "tokenizer_sha256"))


def fine_tuning_config(base: Base, config_file: str | None, overrides: list[str]) -> TrainConfig:
    """The preset over the defaults, the base's model, then the user's file and flags; a flag that
    contradicts the base's architecture or tokenizer is refused."""
    facts = base.checkpoint.training
    model = base.checkpoint.model.config
    model_type = facts.get("tokenizer_model_type") or "unigram"
    config = load_config(config_file, overrides, base=fine_tuning_defaults(model, model_type))
    where = f"--from {base.identity['path']}"
    for name in ARCHITECTURE:
        wanted, has = getattr(config.model, name), getattr(model, name)
        if wanted != has:
            raise ValueError(f"model.{name}={wanted!r} contradicts {where}, whose model has {name}={has!r}: "
                             "a fine-tune keeps the base's architecture (only model.dropout.* may change)")
    if config.tokenizer.reuse:
        raise ValueError("tokenizer.reuse cannot be set with --from: the base's tokenizer is the one used")
    if config.tokenizer.model_type != model_type:
        raise ValueError(f"tokenizer.model_type={config.tokenizer.model_type!r} contradicts {where}, "
                         f"whose tokenizer is {model_type!r}")
    return config


def check_size(corpus: Corpus, path: str) -> None:
    size = len(corpus.text.encode("utf-8"))
    if size < MIN_FINE_TUNING_BYTES:
        raise CorpusError(f"corpus {path} has {size:,} bytes; fine-tuning needs at least "
                          f"{MIN_FINE_TUNING_BYTES // 1024} KB ({MIN_FINE_TUNING_BYTES:,} bytes) of text")


def hold_out(corpus: Corpus) -> None:
    """Without --valid, the corpus's last ~10%, cut at a song, verse or line boundary, validates."""
    if corpus.validation is None:
        corpus.holdout_at = holdout_split(corpus.text)


def byte_fallback_share(tokenizer: Tokenizer, text: str) -> float:
    """The share of `text`'s characters that the tokenizer can only read as UTF-8 bytes."""
    if not text:
        return 0.0
    byte_ids = {i for i, piece in enumerate(tokenizer.pieces) if BYTE_PIECE.fullmatch(piece)}
    chars, run = 0, bytearray()
    for piece_id in [*tokenizer.encode(text), -1]:
        if piece_id in byte_ids:
            run += tokenizer.piece_bytes[piece_id]
        elif run:
            chars += len(run.decode("utf-8", errors="replace"))
            run.clear()
    return chars / len(text)


def byte_fallback_note(share: float) -> str:
    return (f"{share:.1%} of the corpus's characters are not in the base vocabulary and are read as bytes"
            + (" (several pieces each: slower to learn, and the text costs more tokens)" if share >= 0.01 else ""))


def _manifest_bytes(path: Path) -> bytes | None:
    for directory in (path, path.with_name(f".{path.name}.previous")):
        try:
            return (directory / MANIFEST_FILE).read_bytes()
        except OSError:
            continue
    return None


def start(base_path: str, corpus: Corpus, corpus_path: str, config_file: str | None,
          overrides: list[str]) -> tuple[TrainConfig, Base, dict[str, Any]]:
    """A new fine-tune, checked whole before anything is written: (config, base, what the run records)."""
    check_size(corpus, corpus_path)
    base = load_base(base_path)
    config = fine_tuning_config(base, config_file, overrides)
    hold_out(corpus)
    share = byte_fallback_share(base.checkpoint.tokenizer, corpus.text)
    return config, base, {"base": base.identity, "byte_fallback_share": share}


def resume(fine_tune: dict[str, Any] | None, base_path: str | None, corpus: Corpus, corpus_path: str,
           out: Path) -> None:
    """A resumed run: a fine-tune needs no --from again; one given must name the same base."""
    if not fine_tune:
        if base_path:
            raise ValueError(f"the run in {out} was not a fine-tune; continue it without --from")
        return
    if base_path and not same_base(fine_tune["base"], load_base(base_path)):
        saved = fine_tune["base"]
        raise ValueError(f"--from {base_path} is not the checkpoint the run in {out} was fine-tuned from "
                         f"({saved['name']}, weights sha256 {saved['weights_sha256'][:16]}…); "
                         "leave out --from to continue it")
    check_size(corpus, corpus_path)
    hold_out(corpus)


def note(fine_tune: dict[str, Any]) -> str:
    base = fine_tune["base"]
    own = f", {base['val_nats_per_char']:.4f} nats/char on {base['corpus']}" if base.get("val_nats_per_char") else ""
    share = fine_tune["byte_fallback_share"]
    fallback = f"; note: {byte_fallback_note(share)}" if share else ""
    return f"fine-tuning from {base['name']} ({base['path']}{own}){fallback}"
