import json
import pickle
import shutil

import pytest
import torch

from lyricist.model import CheckpointError, LanguageModel, load_checkpoint, save_checkpoint
from lyricist.model.checkpoint import checkpoint_exists, CONFIG_FILE, MANIFEST_FILE, TOKENIZER_FILE, WEIGHTS_FILE, _sha256, read_extra_file

from .helpers import tiny_model

PROBE = torch.tensor([[5, 17, 3, 99, 4]])


@pytest.fixture
def model(tokenizer) -> LanguageModel:
    return tiny_model(tokenizer.vocab_size, dropout={"weight": 0.2, "input": 0.1}).eval()


@pytest.fixture
def saved(tmp_path, model, tokenizer):
    return save_checkpoint(tmp_path / "ckpt", model, tokenizer, {"corpus": "tinyshakespeare", "steps": 12})


def test_round_trip_keeps_weights_config_tokenizer_and_facts(saved, model, tokenizer):
    loaded = load_checkpoint(saved)
    assert loaded.model.config == model.config
    assert loaded.training == {"corpus": "tinyshakespeare", "steps": 12}
    assert not loaded.model.training  # ready for inference
    assert torch.equal(loaded.model(PROBE)[0], model(PROBE)[0])
    assert loaded.model.decoder.weight is loaded.model.embedding.weight  # still tied
    assert loaded.tokenizer.pieces == tokenizer.pieces
    assert sorted(p.name for p in saved.iterdir()) == [CONFIG_FILE, MANIFEST_FILE, WEIGHTS_FILE, TOKENIZER_FILE]
    config = json.loads((saved / CONFIG_FILE).read_text())
    assert config["tokenizer"]["normalization_rule_name"] == "identity"
    assert config["model"]["dropout"]["weight"] == 0.2


def test_extra_files_are_stored_and_verified(tmp_path, model, tokenizer):
    path = save_checkpoint(tmp_path / "c", model, tokenizer, extra_files={"optimizer.safetensors": b"\x01\x02"})
    assert read_extra_file(path, "optimizer.safetensors") == b"\x01\x02"
    (path / "optimizer.safetensors").write_bytes(b"\x01\x03")
    with pytest.raises(CheckpointError, match="optimizer.safetensors: sha256 differs"):
        read_extra_file(path, "optimizer.safetensors")
    with pytest.raises(CheckpointError, match="optimizer.safetensors: sha256 differs"):
        load_checkpoint(path)


def test_loading_never_unpickles(saved, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("pickle used")

    monkeypatch.setattr(pickle, "Unpickler", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    load_checkpoint(saved)


def test_saving_over_a_checkpoint_replaces_it_whole(saved, model, tokenizer):
    with torch.no_grad():
        model.embedding.weight.add_(1.0)
    save_checkpoint(saved, model, tokenizer, {"steps": 13})
    loaded = load_checkpoint(saved)
    assert loaded.training == {"steps": 13}
    assert torch.equal(loaded.model(PROBE)[0], model(PROBE)[0])
    assert [p.name for p in saved.parent.iterdir()] == ["ckpt"]  # no temporary or previous left


def test_a_save_that_dies_midway_leaves_the_previous_checkpoint_intact(saved, model, tokenizer, monkeypatch):
    import lyricist.model.checkpoint as checkpoint_module

    before = load_checkpoint(saved).model(PROBE)[0]
    written = []

    def write_then_die(path, data):
        if written:
            raise OSError(28, "No space left on device")
        written.append(path)
        path.write_bytes(data[: len(data) // 2])

    monkeypatch.setattr(checkpoint_module, "_write_durably", write_then_die)
    with torch.no_grad():
        model.embedding.weight.add_(1.0)
    with pytest.raises(OSError, match="No space left"):
        save_checkpoint(saved, model, tokenizer, {"steps": 99})
    monkeypatch.undo()
    loaded = load_checkpoint(saved)
    assert loaded.training["steps"] == 12
    assert torch.equal(loaded.model(PROBE)[0], before)
    assert [p.name for p in saved.parent.iterdir()] == ["ckpt"]


def test_a_save_that_died_between_its_renames_loses_nothing(saved, model, tokenizer):
    # The crash window: the old directory moved aside, the new one not yet in place.
    previous = saved.with_name(f".{saved.name}.previous")
    saved.rename(previous)
    assert load_checkpoint(saved).training["steps"] == 12  # readers see the previous one...
    assert previous.is_dir() and not saved.exists()  # ...without touching the disk
    assert checkpoint_exists(saved)  # so no new training run takes the directory for empty
    save_checkpoint(saved, model, tokenizer, {"steps": 13})  # the next save repairs, then replaces
    assert load_checkpoint(saved).training["steps"] == 13
    assert [p.name for p in saved.parent.iterdir()] == ["ckpt"]


def test_a_save_that_died_before_its_cleanup_does_not_block_the_next(saved, model, tokenizer):
    # Killed after both renames, before the old copy was deleted; and a half-written staging dir.
    shutil.copytree(saved, saved.with_name(f".{saved.name}.previous"))
    (saved.parent / f".{saved.name}.tmp-deadbeef").mkdir()
    save_checkpoint(saved, model, tokenizer, {"steps": 14})
    assert load_checkpoint(saved).training["steps"] == 14
    assert [p.name for p in saved.parent.iterdir()] == ["ckpt"]


def corrupt(path, how):
    if how == "missing":
        path.unlink()
    elif how == "truncated":
        path.write_bytes(path.read_bytes()[:-10])
    elif how == "tampered":  # same length, one byte changed
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))


@pytest.mark.parametrize("name", [WEIGHTS_FILE, CONFIG_FILE, TOKENIZER_FILE])
@pytest.mark.parametrize("how, problem", [("missing", "missing"), ("truncated", "truncated"),
                                          ("tampered", "sha256 differs")])
def test_damaged_file_gives_one_error_naming_file_and_problem(saved, name, how, problem):
    corrupt(saved / name, how)
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(saved)
    message = str(error.value)
    assert message.startswith(str(saved / name)) and problem in message and "\n" not in message


def rewrite_with_manifest(directory, name, data: bytes):
    """Change a file and re-sign it, as a careless hand edit would: only validation can catch it."""
    (directory / name).write_bytes(data)
    manifest = json.loads((directory / MANIFEST_FILE).read_text())
    manifest["files"][name] = {"sha256": _sha256(data), "bytes": len(data)}
    (directory / MANIFEST_FILE).write_text(json.dumps(manifest))


@pytest.mark.parametrize("key, value, problem", [
    ("hidden_size", 32, rf"{WEIGHTS_FILE}: weights do not fit the config: .*shape"),
    ("cell", "gru", rf"{WEIGHTS_FILE}: weights do not fit the config"),
    ("vocab_size", 999, rf"{TOKENIZER_FILE}: tokenizer has 1000 pieces.*999"),
])
def test_a_config_that_does_not_fit_the_files_is_refused(saved, key, value, problem):
    config = json.loads((saved / CONFIG_FILE).read_text())
    config["model"][key] = value
    rewrite_with_manifest(saved, CONFIG_FILE, json.dumps(config).encode())
    with pytest.raises(CheckpointError, match=problem):
        load_checkpoint(saved)


@pytest.mark.parametrize("content, problem", [
    (b"{not json", "not valid JSON"),
    (b'{"format": "something-else"}', "not a lyricist-checkpoint config"),
    (b'{"format": "lyricist-checkpoint", "version": 7, "model": {}}', "format version 7"),
    (b'{"format": "lyricist-checkpoint", "version": 1, "model": {"vocab_size": 1000, "cell": "tcn"}}',
     "invalid model config: cell must be one of"),
])
def test_bad_config_is_refused_by_name(saved, content, problem):
    rewrite_with_manifest(saved, CONFIG_FILE, content)
    with pytest.raises(CheckpointError, match=f"{CONFIG_FILE}: {problem}"):
        load_checkpoint(saved)


def test_missing_manifest_or_directory(saved, tmp_path):
    (saved / MANIFEST_FILE).unlink()
    with pytest.raises(CheckpointError, match=f"{MANIFEST_FILE}: missing"):
        load_checkpoint(saved)
    with pytest.raises(CheckpointError, match="no such checkpoint directory"):
        load_checkpoint(tmp_path / "nowhere")


def test_manifest_cannot_point_outside_the_checkpoint(saved):
    manifest = json.loads((saved / MANIFEST_FILE).read_text())
    manifest["files"]["../escape"] = {"sha256": "0", "bytes": 1}
    (saved / MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match="not a valid checkpoint file name"):
        load_checkpoint(saved)


def test_the_start_command_sets_shows_and_clears_the_start_context(tmp_path, tiny_checkpoint, capsys):
    """`lyricist start` stores the context as the marker and its pieces, keeps every other file, and a text read
    by the loaded checkpoint then follows it."""
    from lyricist.model.cli import main

    path = tmp_path / "model"
    shutil.copytree(tiny_checkpoint, path)
    save_checkpoint(path, load_checkpoint(path).model, load_checkpoint(path).tokenizer, {"corpus": "none"},
                    {"README.md": b"card"})
    assert main(["start", "--model", str(path)]) == 0
    assert "none (the start marker alone)" in capsys.readouterr().out
    assert main(["start", "--model", str(path), "--text", r"Enter ROMEO\n"]) == 0
    assert "'Enter ROMEO\\n'" in capsys.readouterr().out
    checkpoint = load_checkpoint(path)
    tokenizer = checkpoint.tokenizer
    assert checkpoint.model.config.start == [tokenizer.bos_id, *tokenizer.encode("Enter ROMEO\n")]
    assert read_extra_file(path, "README.md") == b"card"
    assert main(["start", "--model", str(path), "--text", ""]) == 1
    assert "--text" in capsys.readouterr().err
    assert load_checkpoint(path).model.config.start == checkpoint.model.config.start  # a refusal changes nothing
    assert main(["start", "--model", str(path), "--none"]) == 0
    assert load_checkpoint(path).model.config.start == []
