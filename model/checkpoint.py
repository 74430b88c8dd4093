"""Checkpoint directories: safetensors weights, JSON config, tokenizer, sha256 manifest.

A directory is written whole into a temporary sibling and renamed into place,
so a crash never leaves a half-written checkpoint where a good one stood. Loading
checks every file against the manifest before anything is parsed, and no file
is ever unpickled.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from safetensors import SafetensorError
from torch import Tensor

from .network import LanguageModel, ModelConfig
from .tokenizer import TRAINER_SETTINGS, Tokenizer

FORMAT = "lyricist-checkpoint"
VERSION = 1
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
TOKENIZER_FILE = "tokenizer.model"
MANIFEST_FILE = "manifest.json"
REQUIRED_FILES = (CONFIG_FILE, WEIGHTS_FILE, TOKENIZER_FILE)
# A forward checkpoint may carry a backward model over the same tokenizer (`attach_backward`), which reads a
# gap's right side for the alternatives (docs/checkpoints.md).
BACKWARD_CONFIG_FILE = "backward.json"
BACKWARD_WEIGHTS_FILE = "backward.safetensors"


class CheckpointError(Exception):
    """A checkpoint that cannot be used; the message names the file and the problem."""


@dataclass
class Checkpoint:
    model: LanguageModel
    tokenizer: Tokenizer
    training: dict[str, Any] = field(default_factory=dict)  # corpus, steps, validation figures...
    path: Path | None = None
    backward: LanguageModel | None = None  # the backward model it carries, if any
    backward_training: dict[str, Any] = field(default_factory=dict)  # that model's own training facts

    @property
    def name(self) -> str:
        return self.path.name if self.path else "model"

    @property
    def start_text(self) -> str | None:
        """The context every text is read after at inference (docs/model.md), None when there is none."""
        start = self.model.config.start
        return self.tokenizer.decode(start[1:]) if len(start) > 1 else None


def save_checkpoint(
    directory: str | Path,
    model: LanguageModel,
    tokenizer: Tokenizer,
    training: Mapping[str, Any] | None = None,
    extra_files: Mapping[str, bytes] | None = None,
) -> Path:
    """Write a checkpoint to `directory`, replacing any there, atomically.

    `extra_files` (name -> content) travel inside the checkpoint and are covered
    by the manifest too: optimizer state for resuming, a model card, a plot.
    """
    directory = Path(directory)
    recover_interrupted_save(directory)
    if model.config.vocab_size != tokenizer.vocab_size:
        raise ValueError(
            f"model vocab_size {model.config.vocab_size} != tokenizer vocab_size {tokenizer.vocab_size}"
        )
    config = {
        "format": FORMAT,
        "version": VERSION,
        "model": model.config.to_dict(),
        "tokenizer": {"vocab_size": tokenizer.vocab_size, **TRAINER_SETTINGS},
        "training": dict(training or {}),
    }
    files = {
        CONFIG_FILE: (json.dumps(config, indent=2, ensure_ascii=False) + "\n").encode(),
        WEIGHTS_FILE: safetensors.torch.save(stored_tensors(model), metadata={"format": "pt"}),
        TOKENIZER_FILE: tokenizer.model_proto,
        **(extra_files or {}),
    }
    for name in files:
        if name == MANIFEST_FILE or not _is_plain_file_name(name):
            raise ValueError(f"not a valid checkpoint file name: {name!r}")
    manifest = {"files": {name: {"sha256": _sha256(data), "bytes": len(data)} for name, data in files.items()}}
    files[MANIFEST_FILE] = (json.dumps(manifest, indent=2) + "\n").encode()

    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = directory.with_name(f".{directory.name}.tmp-{uuid.uuid4().hex[:8]}")
    previous = _previous_path(directory)
    writing = "the staging directory"
    try:
        staging.mkdir()
        for writing, data in files.items():
            _write_durably(staging / writing, data)
        _fsync_directory(staging)
    except OSError as error:
        shutil.rmtree(staging, ignore_errors=True)
        # A full disk says only "No space left on device": name the checkpoint, and say that nothing was lost.
        raise OSError(error.errno, f"cannot save a checkpoint: {error.strerror} (writing {writing}); "
                                   "what was there before is unchanged", str(directory)) from error
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    try:
        if directory.exists():
            os.rename(directory, previous)
        os.rename(staging, directory)
        _fsync_directory(directory.parent)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        recover_interrupted_save(directory)
        raise
    shutil.rmtree(previous, ignore_errors=True)
    return directory


def load_checkpoint(directory: str | Path) -> Checkpoint:
    """Load and validate a checkpoint; any problem raises one CheckpointError.

    Reading never changes anything on disk, so a model can be loaded while a
    training run writes its next checkpoint over it.
    """
    requested = Path(directory)
    directory = _readable_path(requested)
    contents = _read_verified(directory)
    config = _parse_config(directory / CONFIG_FILE, contents[CONFIG_FILE])
    try:
        model_config = ModelConfig.from_dict(config["model"])
    except ValueError as error:
        raise CheckpointError(f"{directory / CONFIG_FILE}: invalid model config: {error}") from None
    try:
        tokenizer = Tokenizer(contents[TOKENIZER_FILE])
    except (RuntimeError, ValueError) as error:
        raise CheckpointError(f"{directory / TOKENIZER_FILE}: not a usable tokenizer model: {error}") from None
    if tokenizer.vocab_size != model_config.vocab_size:
        raise CheckpointError(
            f"{directory / TOKENIZER_FILE}: tokenizer has {tokenizer.vocab_size} pieces "
            f"but the model config says vocab_size {model_config.vocab_size}"
        )
    model = LanguageModel(model_config)
    _load_weights(model, directory / WEIGHTS_FILE, contents[WEIGHTS_FILE])
    model.eval()
    backward, backward_training = _load_backward(directory, contents, model_config)
    return Checkpoint(model, tokenizer, config.get("training") or {}, requested, backward, backward_training)


def load_forward_checkpoint(directory: str | Path) -> Checkpoint:
    """`load_checkpoint` for what writes or serves text: a backward model is refused, naming what to do."""
    checkpoint = load_checkpoint(directory)
    if checkpoint.model.config.direction == "backward":
        raise CheckpointError(f"{directory} is a backward model: it reads text from its end, so it neither writes "
                              "nor serves text itself; attach it to its forward checkpoint "
                              "(lyricist backward --model FORWARD --from DIR)")
    return checkpoint


def attach_backward(directory: str | Path, backward: Checkpoint | None) -> Path:
    """Make the forward checkpoint in `directory` carry `backward` (a checkpoint trained with direction
    "backward" over the same tokenizer), or carry none (None); atomically, keeping every other file."""
    forward = load_checkpoint(directory)
    if forward.model.config.direction != "forward":
        raise CheckpointError(f"{directory}: a backward model cannot carry another; give the forward checkpoint")
    if backward is None:
        return rewrite_checkpoint(directory, drop=(BACKWARD_CONFIG_FILE, BACKWARD_WEIGHTS_FILE))
    if backward.model.config.direction != "backward":
        raise CheckpointError(f"{backward.path}: not a backward model (train one with --set model.direction=backward)")
    if backward.tokenizer.model_proto != forward.tokenizer.model_proto:
        raise CheckpointError(f"{backward.path}: its tokenizer differs from {directory}'s; a backward model must "
                              "read the same pieces (train it with --from the forward checkpoint)")
    about = {"model": backward.model.config.to_dict(), "training": backward.training}
    return rewrite_checkpoint(directory, {
        BACKWARD_CONFIG_FILE: (json.dumps(about, indent=2, ensure_ascii=False) + "\n").encode(),
        BACKWARD_WEIGHTS_FILE: safetensors.torch.save(stored_tensors(backward.model), metadata={"format": "pt"}),
    })


def _load_backward(directory: Path, contents: Mapping[str, bytes], forward: ModelConfig
                   ) -> tuple[LanguageModel | None, dict[str, Any]]:
    present = [name for name in (BACKWARD_CONFIG_FILE, BACKWARD_WEIGHTS_FILE) if name in contents]
    if not present:
        return None, {}
    if len(present) == 1:
        missing = BACKWARD_WEIGHTS_FILE if present[0] == BACKWARD_CONFIG_FILE else BACKWARD_CONFIG_FILE
        raise CheckpointError(f"{directory / missing}: missing from {MANIFEST_FILE} beside {present[0]}")
    path = directory / BACKWARD_CONFIG_FILE
    try:
        about = json.loads(contents[BACKWARD_CONFIG_FILE])
        config = ModelConfig.from_dict(about["model"])
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f"{path}: invalid model config: {error}") from None
    if config.direction != "backward" or config.vocab_size != forward.vocab_size:
        raise CheckpointError(f"{path}: not a backward model over this checkpoint's {forward.vocab_size} pieces")
    model = LanguageModel(config)
    _load_weights(model, directory / BACKWARD_WEIGHTS_FILE, contents[BACKWARD_WEIGHTS_FILE])
    return model.eval(), about.get("training") or {}


def rewrite_checkpoint(directory: str | Path, files: Mapping[str, bytes] | None = None,
                       drop: tuple[str, ...] = (), **model_config: Any) -> Path:
    """Add (or replace) extra `files` in a checkpoint, leave out the extra files named in `drop`, and change
    fields of its model config, atomically, keeping every other file: what is set after training (the cache,
    the start context, statistics, a backward model)."""
    checkpoint = load_checkpoint(directory)
    manifest = _read_manifest(_readable_path(Path(directory)))
    extra = {name: read_extra_file(directory, name) for name in manifest
             if name not in REQUIRED_FILES and name not in drop}
    extra.update(files or {})
    model = checkpoint.model
    model.config = dataclasses.replace(model.config, **model_config)
    return save_checkpoint(directory, model, checkpoint.tokenizer, checkpoint.training, extra)


def read_extra_file(directory: str | Path, name: str) -> bytes:
    """One of a checkpoint's extra files, verified against the manifest."""
    directory = _readable_path(Path(directory))
    manifest = _read_manifest(directory)
    if name not in manifest:
        raise CheckpointError(f"{directory / name}: not in {MANIFEST_FILE}")
    return _read_one_verified(directory, name, manifest[name])


def stored_tensors(model: LanguageModel) -> dict[str, Tensor]:
    """The tensors a checkpoint holds: the state dict with a tied decoder stored once."""
    state = model.state_dict()
    if model.config.tie_weights:
        del state["decoder.weight"]
    return {name: tensor.contiguous() for name, tensor in state.items()}


def checkpoint_exists(directory: str | Path) -> bool:
    """Whether `directory` holds a checkpoint (counting one a crashed save left aside)."""
    directory = Path(directory)
    return any((d / MANIFEST_FILE).exists() for d in (directory, _previous_path(directory)))


def _readable_path(directory: Path) -> Path:
    """The directory, or during a save's swap (or after a crash in it) the previous one."""
    if directory.is_dir():
        return directory
    previous = _previous_path(directory)
    if previous.is_dir():
        return previous
    raise CheckpointError(f"{directory}: no such checkpoint directory")


def recover_interrupted_save(directory: Path) -> None:
    """Tidy up after a save that died (writers only): put the previous checkpoint back if
    the new one never arrived, drop a previous one the new one already replaced, and
    remove half-written staging directories."""
    previous = _previous_path(directory)
    if previous.is_dir():
        if directory.exists():
            shutil.rmtree(previous)
        else:
            os.rename(previous, directory)
    for staging in directory.parent.glob(f".{directory.name}.tmp-*"):
        shutil.rmtree(staging, ignore_errors=True)


def _read_verified(directory: Path) -> dict[str, bytes]:
    manifest = _read_manifest(directory)
    for name in REQUIRED_FILES:
        if name not in manifest:
            raise CheckpointError(f"{directory / name}: missing from {MANIFEST_FILE}")
    return {name: _read_one_verified(directory, name, entry) for name, entry in manifest.items()}


def _read_manifest(directory: Path) -> dict[str, dict[str, Any]]:
    path = directory / MANIFEST_FILE
    try:
        files = json.loads(path.read_bytes())["files"]
        if not all(isinstance(e, dict) and {"sha256", "bytes"} <= e.keys() for e in files.values()):
            raise ValueError("an entry lacks sha256 or bytes")
        return files
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing (is this a lyricist checkpoint?)") from None
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise CheckpointError(f"{path}: not a valid manifest ({error})") from None


def _read_one_verified(directory: Path, name: str, entry: dict[str, Any]) -> bytes:
    if not _is_plain_file_name(name):
        raise CheckpointError(f"{directory / MANIFEST_FILE}: {name!r} is not a valid checkpoint file name")
    path = directory / name
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing (listed in {MANIFEST_FILE})") from None
    if len(data) != entry["bytes"]:
        raise CheckpointError(f"{path}: {len(data)} bytes, {MANIFEST_FILE} says {entry['bytes']} (truncated?)")
    if _sha256(data) != entry["sha256"]:
        raise CheckpointError(f"{path}: sha256 differs from {MANIFEST_FILE} (file changed or corrupted)")
    return data


def _parse_config(path: Path, data: bytes) -> dict[str, Any]:
    try:
        config = json.loads(data)
    except ValueError as error:
        raise CheckpointError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a {FORMAT} config")
    if config.get("version") != VERSION:
        raise CheckpointError(f"{path}: format version {config.get('version')!r}, this lyricist reads {VERSION}")
    if "model" not in config:
        raise CheckpointError(f"{path}: no model section")
    return config


def _load_weights(model: LanguageModel, path: Path, data: bytes) -> None:
    try:
        tensors = safetensors.torch.load(data)
    except (SafetensorError, ValueError) as error:
        raise CheckpointError(f"{path}: not a valid safetensors file ({error})") from None
    expected = stored_tensors(model)
    problems = [f"missing tensor {name}" for name in expected if name not in tensors]
    problems += [f"unexpected tensor {name}" for name in tensors if name not in expected]
    for name, tensor in expected.items():
        if name not in tensors:
            continue
        stored = tensors[name]
        if stored.shape != tensor.shape:
            problems.append(f"{name} has shape {tuple(stored.shape)}, the config needs {tuple(tensor.shape)}")
        elif stored.dtype != tensor.dtype:  # loading would silently convert it
            problems.append(f"{name} has dtype {stored.dtype}, the model needs {tensor.dtype}")
        elif not torch.isfinite(stored).all():  # a diverged run's weights would serve nothing but noise
            problems.append(f"{name} holds NaN or infinite values")
    if problems:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise CheckpointError(f"{path}: weights do not fit the config: {shown}")
    model.load_state_dict(tensors, strict=False)  # the tied decoder weight is the embedding


def _is_plain_file_name(name: str) -> bool:
    """A name inside the checkpoint directory itself: no path, nothing hidden."""
    return bool(name) and "/" not in name and "\\" not in name and not name.startswith(".")


def _previous_path(directory: Path) -> Path:
    return directory.with_name(f".{directory.name}.previous")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _write_durably(path: Path, data: bytes) -> None:
    with open(path, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())


def _fsync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
