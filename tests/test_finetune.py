"""lyricist train --from: a tiny base fine-tuned on a tiny corpus of songs, through the real command."""

import hashlib
import json
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lyricist.model import load_checkpoint
from lyricist.model.checkpoint import MANIFEST_FILE, read_extra_file
from lyricist.model.cli import main as lyricist_main
from lyricist.model.scoring import score_text
from lyricist.training.config import FINE_TUNING, MIN_FINE_TUNING_BYTES
from lyricist.training.data import holdout_split, read_corpus
from lyricist.training.run_state import LOG_FILE

from .helpers import ROOT, SHAKESPEARE

SONGS = ROOT / "data" / "songs" / "train.txt"
BASE = ["model.vocab_size=400", "model.hidden_size=32", "model.embedding_size=16", "optim.batch_size=8",
        "optim.bptt=16", "optim.warmup_steps=5", "optim.max_steps=40", "run.eval_every_steps=20",
        "run.samples_in_card=0", "run.threads=1"]
# The preset as it is, but short: 30 steps, an evaluation every 10, a line of the log every step.
FINE = ["optim.max_steps=30", "run.eval_every_steps=10", "run.log_every_steps=1", "run.samples_in_card=1",
        "run.threads=1"]


def train_args(corpus, out, *settings, base=None):
    args = ["train", "--corpus", str(corpus), "--out", str(out)]
    if base is not None:
        args += ["--from", str(base)]
    for setting in settings:
        args += ["--set", setting]
    return args


def read_log(out) -> list[dict]:
    return [json.loads(line) for line in read_extra_file(out, LOG_FILE).decode().splitlines()]


def train_losses(out) -> list[float]:
    return [e["loss"] for e in read_log(out) if e["event"] == "train"]


def snapshot(directory: Path) -> dict[str, bytes]:
    """Every file under `directory`, by relative path: a checkpoint killed mid-save may live in
    its `.previous` sibling, so snapshot the folder that holds it to see all of it."""
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """A tiny model trained for a moment on plays, reading every text after a blank line: the checkpoint to
    start from."""
    folder = tmp_path_factory.mktemp("base")
    corpus = folder / "plays.txt"
    corpus.write_text(SHAKESPEARE.read_text(encoding="utf-8")[:40_000], encoding="utf-8")
    assert lyricist_main(train_args(corpus, folder / "base", *BASE)) == 0
    assert lyricist_main(["start", "--model", str(folder / "base"), "--text", r"\n\n"]) == 0
    return folder / "base"


@pytest.fixture(scope="module")
def lyrics(tmp_path_factory) -> Path:
    """About 12 KB of cowboy songs, whole songs: "someone's own lyrics"."""
    text = SONGS.read_text(encoding="utf-8")
    start = text.index("SONG:", 800_000)
    end = text.index("SONG:", start + 12_000)
    path = tmp_path_factory.mktemp("lyrics") / "mine.txt"
    path.write_text(text[start:end], encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def fine_tuned(base, lyrics, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tuned") / "mine"
    assert lyricist_main(train_args(lyrics, out, *FINE, base=base)) == 0
    return out


def test_fine_tuning_lowers_the_loss_on_the_held_out_songs(base, lyrics, fine_tuned):
    corpus = read_corpus(lyrics)
    corpus.holdout_at = holdout_split(corpus.text)
    held_out = corpus.validation_text
    assert held_out.startswith("SONG:") and 0.05 < len(held_out) / len(corpus.text) < 0.15  # whole songs
    before = load_checkpoint(base)
    after = load_checkpoint(fine_tuned)
    base_score = score_text(before.model, before.tokenizer, held_out).metrics()["nats_per_char"]
    tuned_score = score_text(after.model, after.tokenizer, held_out).metrics()["nats_per_char"]
    assert tuned_score < base_score - 0.05, (base_score, tuned_score)
    facts = after.training
    assert facts["base_val_nats_per_char"] == pytest.approx(base_score, rel=1e-9)  # step 0: the base itself
    assert facts["val_nats_per_char"] == pytest.approx(tuned_score, rel=1e-9)  # the best model is kept
    # The base's tokenizer and architecture (its start context too), its weights as the start, the preset's
    # schedule.
    assert after.tokenizer.model_proto == before.tokenizer.model_proto
    assert after.model.config == before.model.config and before.start_text == "\n\n"
    evals = [e for e in read_log(fine_tuned) if e["event"] == "eval"]
    assert [e["step"] for e in evals] == [0, 10, 20, 30]
    config = json.loads(read_extra_file(fine_tuned, "trainer_state.json"))["config"]
    for key in ("lr", "warmup_steps", "batch_size", "bptt", "patience"):
        assert config["optim"][key] == FINE_TUNING["optim"][key]


def test_the_checkpoint_and_its_card_record_the_base(base, lyrics, fine_tuned):
    manifest = (base / MANIFEST_FILE).read_bytes()
    facts = load_checkpoint(fine_tuned).training
    recorded = facts["fine_tuned_from"]
    assert recorded["name"] == "base" and recorded["path"] == str(base)
    assert recorded["manifest_sha256"] == hashlib.sha256(manifest).hexdigest()
    assert recorded["weights_sha256"] == json.loads(manifest)["files"]["model.safetensors"]["sha256"]
    assert recorded["val_nats_per_char"] == load_checkpoint(base).training["val_nats_per_char"]
    share = share_unseen(base, read_corpus(lyrics).text)
    assert 0 < share < 0.01 and facts["byte_fallback_share"] == pytest.approx(share)
    card = read_extra_file(fine_tuned, "README.md").decode()
    assert "fine-tuned by Lyricist from `base`" in card
    assert recorded["weights_sha256"][:16] in card and recorded["manifest_sha256"][:16] in card
    assert f"base {facts['base_val_nats_per_char']:.4f} nats/char, fine-tuned {facts['val_nats_per_char']:.4f}" in card
    assert f"{share:.1%} of the corpus's characters are not in the base vocabulary and are read as bytes" in card


def share_unseen(base: Path, text: str) -> float:
    """The share of `text`'s characters the base never read: its vocabulary holds every character of the
    plays it learned from (the tokenizer's character coverage is 1), and no other."""
    seen = set(read_corpus(base.parent / "plays.txt").train_text) | {" ", "\n"}
    return sum(c not in seen for c in text) / len(text)


def run_cli(*args):
    return subprocess.Popen([sys.executable, "-m", "lyricist.model.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize("again", ["without --from", "with the same --from"])
def test_a_killed_fine_tune_resumes_exactly(base, lyrics, fine_tuned, tiny_checkpoint, tmp_path, again):
    out = tmp_path / "mine"
    settings = [*FINE, "run.checkpoint_every_minutes=0.0001"]
    process = run_cli(*train_args(lyrics, out, *settings, base=base))
    deadline = time.monotonic() + 120
    while not (out / MANIFEST_FILE).exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.3)
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=60)
    stopped_at = load_checkpoint(out).training["steps"]
    assert 0 < stopped_at < 30, "the kill should land mid-run"
    if "same" in again and out.exists():
        previous = out.with_name(f".{out.name}.previous")
        shutil.rmtree(previous, ignore_errors=True)  # a kill before a save dropped the checkpoint it replaced
        out.rename(previous)  # as a kill between a save's two renames leaves it

    # Another base is not the one this run started from: refused, nothing touched. The kill
    # may land between a save's two renames, leaving the run in `.mine.previous`.
    before = snapshot(tmp_path)
    wrong = run_cli(*train_args(lyrics, out, *settings, base=tiny_checkpoint), "--resume")
    _, stderr = wrong.communicate(timeout=60)
    assert wrong.returncode == 1 and "is not the checkpoint the run" in stderr and stderr.count("\n") == 1
    assert snapshot(tmp_path) == before

    resumed = run_cli(*train_args(lyrics, out, *settings, base=base if "same" in again else None), "--resume")
    _, stderr = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, stderr
    assert train_losses(out) == train_losses(fine_tuned)
    facts = load_checkpoint(out).training
    assert facts["finished"] and facts["fine_tuned_from"] == load_checkpoint(fine_tuned).training["fine_tuned_from"]


def _not_a_checkpoint(kind: str, tmp_path: Path, base: Path) -> Path:
    path = tmp_path / "from"
    if kind == "missing":
        return path
    if kind == "text file":
        path.write_text("my favourite model\n")
        return path
    if kind == "empty folder":
        path.mkdir()
    elif kind == "a .pt file":
        path.mkdir()
        (path / "model.pt").write_bytes(b"PK\x03\x04" + bytes(100))
    else:
        shutil.copytree(base, path)
        if kind == "missing weights":
            (path / "model.safetensors").unlink()
        elif kind == "damaged manifest":
            (path / MANIFEST_FILE).write_text('{"files": {"config.json": ')
    return path


def _bad_corpus(kind: str, tmp_path: Path, lyrics: Path) -> Path:
    path = tmp_path / "corpus.txt"
    content = {
        "empty": b"",
        "binary": b"\x89PNG\r\n\x1a\n\x00\x00\x00" * 600,
        "not UTF-8": "café au lait\n".encode("latin-1") * 400,
        "too small": lyrics.read_bytes()[: MIN_FINE_TUNING_BYTES - 100],
    }[kind]
    path.write_bytes(content)
    return path


@pytest.mark.parametrize("what, kind, message", [
    ("from", "missing", "no such directory"),
    ("from", "text file", "is a file, not a checkpoint directory"),
    ("from", "empty folder", "manifest.json: missing (is this a lyricist checkpoint?)"),
    ("from", "a .pt file", "holds model.pt, another format"),
    ("from", "missing weights", "model.safetensors: missing (listed in manifest.json)"),
    ("from", "damaged manifest", "manifest.json: not a valid manifest"),
    ("corpus", "empty", "is empty"),
    ("corpus", "binary", "looks binary"),
    ("corpus", "not UTF-8", "is not UTF-8 text"),
    ("corpus", "too small", "fine-tuning needs at least 4 KB (4,096 bytes) of text"),
    ("setting", "model.hidden_size=64", "model.hidden_size=64 contradicts --from"),
    ("setting", "tokenizer.reuse=elsewhere", "tokenizer.reuse cannot be set with --from"),
])
def test_bad_input_is_one_line_and_exit_1_and_nothing_is_written(base, lyrics, tmp_path, capsys, what, kind,
                                                                   message):
    source = _not_a_checkpoint(kind, tmp_path, base) if what == "from" else base
    corpus = _bad_corpus(kind, tmp_path, lyrics) if what == "corpus" else lyrics
    settings = [kind] if what == "setting" else []
    existing = tmp_path / "existing"  # an earlier run's checkpoint, as OUT
    shutil.copytree(base, existing)
    before = snapshot(existing)
    capsys.readouterr()
    for out in (existing, tmp_path / "new"):
        assert lyricist_main(train_args(corpus, out, *FINE, *settings, base=source)) == 1
        error = capsys.readouterr().err
        assert error.startswith("lyricist train: error: ") and message in error, error
        assert error.count("\n") == 1, error
    assert snapshot(existing) == before
    assert not (tmp_path / "new").exists() and not list(tmp_path.glob(".new*"))


def test_a_corpus_the_base_vocabulary_lacks_trains_through_bytes(base, tmp_path, capsys):
    words = ["αγάπη", "θάλασσα", "φεγγάρι", "καρδιά", "τραγούδι", "νύχτα", "ουρανός", "δρόμος", "φως", "μου"]
    rng = random.Random(5)
    songs = []
    for number in range(12):
        verses = ["\n".join(" ".join(rng.choice(words) for _ in range(5)) for _ in range(4)) for _ in range(3)]
        songs.append(f"SONG: {number}\n" + "\n\n".join(verses))
    text = "\n\n\n".join(songs) + "\n"
    assert len(text.encode()) > MIN_FINE_TUNING_BYTES
    corpus = tmp_path / "greek.txt"
    corpus.write_text(text, encoding="utf-8")
    capsys.readouterr()
    assert lyricist_main(train_args(corpus, tmp_path / "out", *FINE, base=base)) == 0
    expected = share_unseen(base, text)
    assert expected > 0.8
    note = f"{expected:.1%} of the corpus's characters are not in the base vocabulary and are read as bytes"
    assert note in capsys.readouterr().err
    facts = load_checkpoint(tmp_path / "out").training
    assert facts["byte_fallback_share"] == pytest.approx(expected)
    assert note in read_extra_file(tmp_path / "out", "README.md").decode()
    assert facts["val_nats_per_char"] < facts["base_val_nats_per_char"]


def test_the_held_out_slice_starts_at_a_song_then_a_verse_then_a_line():
    songs = "".join(f"SONG: {i}\n" + "la la la\n\nla la\n" * 3 + "\n\n" for i in range(40))
    cut = holdout_split(songs)
    assert songs[cut:].startswith("SONG:") and abs(cut - 0.9 * len(songs)) < 0.05 * len(songs)
    verses = "la la la\nla la\n\n" * 200
    cut = holdout_split(verses)
    assert verses[cut - 2 : cut] == "\n\n" and verses[cut] == "l"
    lines = "one line\n" * 300
    assert lines[holdout_split(lines) - 1] == "\n"
    assert holdout_split("x" * 1000) == 900  # no boundary at all: the plain cut
