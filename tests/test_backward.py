"""A backward model: trained on every text read from its end, carried by a forward checkpoint, and mixed into the
ranking of /v1/alternatives. Real training runs of tiny models, the real `lyricist` command, the real app."""

import math
import shutil

import pytest
import torch
from fastapi.testclient import TestClient

from lyricist.app.server import create_app
from lyricist.app.settings import Settings
from lyricist.model import CheckpointError, Tokenizer, load_checkpoint, save_checkpoint
from lyricist.model.cli import main as lyricist_main
from lyricist.model.network import ModelConfig, in_reading_order
from lyricist.model.scoring import score_text
from lyricist.songwriting.alternatives import BACKWARD_SHARE
from lyricist.training.config import TrainConfig
from lyricist.training.data import read_corpus
from lyricist.training.trainer import Trainer

from .helpers import tiny_model
from .test_alternatives import RHYME_WEIGHT, alternatives, in_place
from .test_training import train_args


def test_a_backward_model_reads_the_marker_then_the_pieces_from_the_last():
    backward = ModelConfig(vocab_size=10, direction="backward")
    assert in_reading_order(backward, [1, 5, 6, 7]) == [1, 7, 6, 5]
    assert in_reading_order(ModelConfig(vocab_size=10), [1, 5, 6, 7]) == [1, 5, 6, 7]
    with pytest.raises(ValueError, match="direction must be one of forward, backward"):
        ModelConfig(vocab_size=10, direction="sideways")


def test_a_backward_run_trains_and_validates_on_the_text_read_from_its_end(corpus, tmp_path):
    config = TrainConfig.from_dict({"model": {"vocab_size": 400, "hidden_size": 32, "embedding_size": 16,
                                              "direction": "backward"},
                                    "optim": {"batch_size": 8, "bptt": 16}})
    text = read_corpus(corpus)
    trainer = Trainer(text, tmp_path / "unused", config, "test")
    ids = trainer.tokenizer.encode(text.train_text, add_bos=True)
    row = trainer.stream.data[0].tolist()  # the first of the streams laid out side by side
    assert row == [ids[0], *ids[:0:-1]][: len(row)]

    out = tmp_path / "backward"
    assert lyricist_main(train_args(corpus, out, "optim.max_steps=20", "model.direction=backward")) == 0
    checkpoint = load_checkpoint(out)
    assert checkpoint.model.config.direction == "backward"
    validation = text.validation_text
    figure = score_text(checkpoint.model, checkpoint.tokenizer, validation)
    assert checkpoint.training["val_nats_per_char"] == pytest.approx(figure.nll / len(validation), rel=1e-6)
    # read by hand: the start marker, then the pieces from the last to the first
    pieces = checkpoint.tokenizer.encode(validation)
    stream = torch.tensor([checkpoint.tokenizer.bos_id, *pieces[::-1]])
    with torch.inference_mode():
        logits, _ = checkpoint.model.read(stream[:-1], None, every_piece=True)
    by_hand = -float(torch.log_softmax(logits.double(), -1).gather(1, stream[1:, None]).sum())
    assert figure.nll == pytest.approx(by_hand, rel=1e-5)


@pytest.fixture(scope="module")
def backward_checkpoint(tmp_path_factory, tokenizer):
    """A random-weight backward model over the serving checkpoint's tokenizer."""
    model = tiny_model(tokenizer.vocab_size, embedding_size=24, hidden_size=40, seed=5, direction="backward")
    return save_checkpoint(tmp_path_factory.mktemp("backward") / "tiny-backward", model, tokenizer,
                           {"val_nats_per_char": 3.9})


@pytest.fixture(scope="module")
def paired_checkpoint(tmp_path_factory, served_checkpoint, backward_checkpoint):
    """The serving checkpoint, carrying the backward model (attached by `lyricist backward`)."""
    paired = tmp_path_factory.mktemp("paired") / "tiny-lstm"
    shutil.copytree(served_checkpoint, paired)
    assert lyricist_main(["backward", "--model", str(paired), "--from", str(backward_checkpoint)]) == 0
    return paired


def test_the_backward_command_attaches_shows_and_removes(paired_checkpoint, backward_checkpoint, tmp_path,
                                                         capsys, tokenizer):
    checkpoint = load_checkpoint(paired_checkpoint)
    expected = load_checkpoint(backward_checkpoint).model.state_dict()
    assert checkpoint.backward is not None and checkpoint.backward_training == {"val_nats_per_char": 3.9}
    assert all(torch.equal(tensor, expected[name]) for name, tensor in checkpoint.backward.state_dict().items())
    capsys.readouterr()
    assert lyricist_main(["backward", "--model", str(paired_checkpoint)]) == 0
    assert "carries a backward model" in capsys.readouterr().out
    # setting the start context afterwards keeps it
    copy = tmp_path / "copy"
    shutil.copytree(paired_checkpoint, copy)
    assert lyricist_main(["start", "--model", str(copy), "--text", "\\n"]) == 0
    assert load_checkpoint(copy).backward is not None
    assert lyricist_main(["backward", "--model", str(copy), "--none"]) == 0
    assert load_checkpoint(copy).backward is None
    assert "no backward model" in capsys.readouterr().out


def test_what_cannot_be_attached_or_served_is_refused(paired_checkpoint, backward_checkpoint, served_checkpoint,
                                                      tmp_path, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(served_checkpoint, copy)
    capsys.readouterr()
    assert lyricist_main(["backward", "--model", str(copy), "--from", str(served_checkpoint)]) == 1
    assert "not a backward model" in capsys.readouterr().err
    small = Tokenizer.train("the wind blew cold across the moor " * 200, vocab_size=300)
    other = tiny_model(small.vocab_size, embedding_size=8, hidden_size=8, direction="backward")
    save_checkpoint(tmp_path / "other-pieces", other, small)
    assert lyricist_main(["backward", "--model", str(copy), "--from", str(tmp_path / "other-pieces")]) == 1
    assert "tokenizer differs" in capsys.readouterr().err
    assert lyricist_main(["backward", "--model", str(backward_checkpoint), "--from", str(backward_checkpoint)]) == 1
    assert "cannot carry another" in capsys.readouterr().err
    assert load_checkpoint(copy).backward is None  # nothing changed
    assert lyricist_main(["generate", "--model", str(backward_checkpoint), "--max-new-tokens", "3"]) == 1
    assert "is a backward model" in capsys.readouterr().err
    with pytest.raises(CheckpointError, match="is a backward model"), \
            TestClient(create_app(Settings(models=(str(backward_checkpoint),)))):
        pass


STANZAS = ("The wind blew cold across the hill,\nMy true love waited by the mill,\nAnd all the night was still\n\n"
           "Another verse begins")


def test_candidates_are_ranked_by_both_readings_and_logprob_stays_the_forward_one(paired_checkpoint,
                                                                                  backward_checkpoint):
    """Each candidate's weight is (1 - s) times its forward log probability plus s times the backward model's
    reading of the same text from the stanza's end (the blank line after it included) back to the start of the
    line before the part's, plus e^4 for a kept rhyme; `prob` is the softmax of the weights, `rank` counts the
    weightier; `logprob` is still what /v1/score gives."""
    backward = load_checkpoint(backward_checkpoint)
    stanza_end = STANZAS.index("\n\n") + 2
    line_before = STANZAS.index("My true")  # the parts are on the third line
    with TestClient(create_app(Settings(models=(str(paired_checkpoint),)))) as client:
        for word, syllables in (("still", 1), ("night", None)):
            start = STANZAS.index(word)
            part = (start, start + len(word))
            body = alternatives(client, text=STANZAS, start=part[0], end=part[1], n=32, syllables=syllables)
            original, shown = body["original"], body["alternatives"]
            weighed = shown if any(a["text"] == original["text"] for a in shown) else [*shown, original]

            def weight(candidate, part=part):
                text = in_place(STANZAS, *part, candidate["text"])
                read = text[line_before: stanza_end + len(text) - len(STANZAS)]
                back = -score_text(backward.model, backward.tokenizer, read).nll
                rhyme = RHYME_WEIGHT if candidate["rhymes_with"] else 0.0
                return (1 - BACKWARD_SHARE) * candidate["logprob"] + BACKWARD_SHARE * back + rhyme

            weights = {a["text"]: weight(a) for a in weighed}
            total = sum(math.exp(w - weights[original["text"]]) for w in weights.values())
            for candidate in weighed:
                share = math.exp(weights[candidate["text"]] - weights[original["text"]]) / total
                assert candidate["prob"] == pytest.approx(share, rel=1e-4, abs=1e-9), candidate
            ordered = [weights[a["text"]] for a in shown]
            assert ordered == sorted(ordered, reverse=True) or max(
                abs(a - b) for a, b in zip(ordered, sorted(ordered, reverse=True))) < 1e-4
            assert original["rank"] == 1 + sum(weights[a["text"]] > weights[original["text"]] + 1e-6 for a in shown)
            for candidate in (shown[0], original):
                text = in_place(STANZAS, *part, candidate["text"])
                score = client.post("/v1/score", json={"text": text[: text.index("\n\n")]}).json()
                assert candidate["logprob"] == pytest.approx(-score["nll"], abs=1e-3)
            # the backward reading moves the ranking: by the forward log probability alone it would differ
            by_forward = sorted(weighed, key=lambda a: -(a["logprob"] + (RHYME_WEIGHT if a["rhymes_with"] else 0)))
            assert [a["text"] for a in by_forward] != [a["text"] for a in sorted(weighed, key=lambda a: -a["prob"])]
