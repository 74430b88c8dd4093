import pytest

from model import Tokenizer

from .helpers import SHAKESPEARE


@pytest.fixture(scope="session")
def shakespeare_text() -> str:
    return SHAKESPEARE.read_text(encoding="utf-8")


@pytest.fixture(scope="session")
def tokenizer(shakespeare_text) -> Tokenizer:
    """A small vocabulary learned from the whole corpus (a few seconds)."""
    return Tokenizer.train(shakespeare_text, vocab_size=1000)
