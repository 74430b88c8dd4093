import pytest
from hypothesis import settings

from lyricist.model import Tokenizer

from .helpers import SHAKESPEARE

# CI gives the same verdict on the same code: property tests draw the same cases every run.
# `pytest --hypothesis-profile=explore` draws fresh ones, many more (RELIABILITY.md).
settings.register_profile("repeatable", derandomize=True, max_examples=50)
settings.register_profile("explore", max_examples=1000)
settings.load_profile("repeatable")


@pytest.fixture(scope="session")
def shakespeare_text() -> str:
    return SHAKESPEARE.read_text(encoding="utf-8")


@pytest.fixture(scope="session")
def corpus(tmp_path_factory, shakespeare_text):
    """A 40 KB corpus file for training runs: big enough for a batch, small enough for seconds."""
    path = tmp_path_factory.mktemp("corpus") / "shakespeare-slice.txt"
    path.write_text(shakespeare_text[:40_000], encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def tokenizer(shakespeare_text) -> Tokenizer:
    """A small vocabulary learned from the whole corpus (a few seconds)."""
    return Tokenizer.train(shakespeare_text, vocab_size=1000)


@pytest.fixture(scope="session")
def served_checkpoint(tmp_path_factory, tokenizer):
    """A small random-weight checkpoint for the serving tests (its name: "tiny-lstm")."""
    import torch

    from lyricist.model import save_checkpoint

    from .helpers import tiny_model

    model = tiny_model(tokenizer.vocab_size, embedding_size=32, hidden_size=48, seed=11)
    with torch.no_grad():  # it never ends a text, so a long generation runs as long as it was asked to
        model.decoder.bias[tokenizer.eos_id] = -1e4
    return save_checkpoint(tmp_path_factory.mktemp("serving") / "tiny-lstm", model, tokenizer,
                           {"corpus": "tinyshakespeare", "val_nats_per_char": 4.2})


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, tokenizer):
    """A small random-weight checkpoint for generation and prediction tests."""
    from lyricist.model import save_checkpoint

    from .helpers import tiny_model

    model = tiny_model(tokenizer.vocab_size, embedding_size=32, hidden_size=32, seed=3)
    return save_checkpoint(tmp_path_factory.mktemp("tiny") / "tiny", model, tokenizer, {"corpus": "none"})
