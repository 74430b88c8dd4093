"""Speaker renaming (optim.rename_speakers): new names scene by scene, a new draw every epoch."""

import re

import pytest
import torch

from lyricist.model.cli import main as lyricist_main
from lyricist.training.data import BatchStream
from lyricist.training.rename_speakers import SPAN_CHARS, SPEAKER_LINE, SpeakerRenamer

from .test_training import train_args, train_losses

SPEECHES = [
    ("ALICE", "Good morrow, Bob; the Bobbing boats are in."),
    ("BOB", "And to you, Alice. Where is ALICE's brother?"),
    ("First Lord", "Peace, both."),
]


def one_scene_play() -> str:
    text = "\n\n".join(f"{speaker}:\n{speech}" for speaker, speech in SPEECHES * 8) + "\n"
    assert len(text) < SPAN_CHARS[0], "the test needs a play shorter than one scene"
    return text


def test_a_renamed_scene_gives_each_speaker_one_new_name_in_labels_and_speeches():
    text = one_scene_play()
    renamed = SpeakerRenamer(text, probability=1.0, seed=3).renamed(epoch=0)
    labels = SPEAKER_LINE.findall(renamed)
    new = dict(zip(["ALICE", "BOB"], labels[:2]))
    assert len(set(new.values())) == 2 and not set(new.values()) & {"ALICE", "BOB"}
    assert labels == [new["ALICE"], new["BOB"]] * 8
    # Undoing the one substitution per speaker gives the play back: names only in whole words,
    # in capitals and in title case; "Bobbing" and the unnamed "First Lord" untouched.
    undone = renamed
    for old, name in new.items():
        undone = re.sub(rf"\b{name}\b", old, undone)
        undone = re.sub(rf"\b{name.title()}\b", old.title(), undone)
    assert undone == text
    assert "Bobbing" in renamed and "First Lord:" in renamed


def test_new_names_are_drawn_from_the_casts_letters_and_are_none_of_the_cast(shakespeare_text):
    renamer = SpeakerRenamer(shakespeare_text[:300_000], probability=1.0, seed=0)
    labels = set(SPEAKER_LINE.findall(renamer.renamed(0)))
    assert len(labels) > 50 and not labels & set(renamer.names)
    assert all(re.fullmatch(r"[A-Z][A-Z'-]{2,11}", name) for name in labels)


def test_each_epoch_is_its_own_draw_and_the_same_epoch_the_same_text(shakespeare_text):
    text = shakespeare_text[:200_000]
    renamer = SpeakerRenamer(text, probability=0.5, seed=1234)
    first = renamer.renamed(1)
    assert first == SpeakerRenamer(text, probability=0.5, seed=1234).renamed(1)
    assert first != renamer.renamed(2) and first != SpeakerRenamer(text, 0.5, seed=7).renamed(1)
    # About half of the scenes keep their cast.
    labels = SPEAKER_LINE.findall(first)
    kept = sum(name in renamer.names for name in labels) / len(labels)
    assert 0.3 < kept < 0.7
    assert SpeakerRenamer(text, probability=0.0, seed=1234).renamed(1) == text


def test_a_stream_lays_out_each_epochs_pieces_and_a_restored_stream_continues_the_same_chunks():
    def ids_of_epoch(epoch: int) -> list[int]:
        return [(epoch * 7 + i * 3) % 50 for i in range(600 + 17 * epoch)]

    def stream():
        return BatchStream(ids_of_epoch, rows=4, bptt=10, variable=True, seed=5, shard=slice(2, 4))

    whole = stream()
    chunks, saved = [], None
    while whole.epoch < 3:
        if whole.epoch == 1 and whole.offset > 40 and saved is None:
            saved = (whole.state(), whole.generator.get_state(), len(chunks))
        inputs, targets, _ = whole.next_chunk()
        chunks.append((inputs.clone(), targets.clone()))
    # The last epoch laid out its own pieces, this process holding rows 2 and 3 of 4.
    assert whole.data.shape == (2, len(ids_of_epoch(3)) // 4)
    assert torch.equal(whole.data[0], torch.tensor(ids_of_epoch(3)[: 4 * whole.data.shape[1]]).view(4, -1)[2])

    resumed = stream()
    state, generator_state, done = saved
    resumed.restore(state, generator_state)
    for inputs, targets in chunks[done:]:
        again_inputs, again_targets, _ = resumed.next_chunk()
        assert torch.equal(again_inputs, inputs) and torch.equal(again_targets, targets)


@pytest.fixture(scope="module")
def small_play(tmp_path_factory, shakespeare_text):
    """8 KB: two passes of the tiny model's batches in 40 steps."""
    path = tmp_path_factory.mktemp("play") / "play.txt"
    path.write_text(shakespeare_text[:8_000], encoding="utf-8")
    return path


def test_training_with_renamed_speakers_is_repeatable_and_differs_from_training_without(small_play, tmp_path):
    runs = {"renamed": "optim.rename_speakers=0.5", "again": "optim.rename_speakers=0.5",
            "plain": "optim.rename_speakers=0"}
    for name, setting in runs.items():
        assert lyricist_main(train_args(small_play, tmp_path / name, "optim.max_steps=40", setting)) == 0
    renamed = train_losses(tmp_path / "renamed")
    assert renamed == train_losses(tmp_path / "again")
    plain = train_losses(tmp_path / "plain")
    # The first epoch differs already (its scenes are renamed too), so the losses part at once.
    assert renamed[0] != plain[0] and renamed[-1] < renamed[0]
