"""`"adapt": true` on /v1/score: dynamic evaluation over HTTP, on a per-request copy of the weights."""

import pytest
from fastapi.testclient import TestClient

from lyricist.app.server import create_app
from lyricist.app.settings import Settings
from lyricist.model import save_checkpoint
from lyricist.model.dynamic_eval import DynamicSettings, gradient_statistics, save_statistics

from .helpers import tiny_model

REPEATED = "O happy dagger, this is thy sheath. " * 12


@pytest.fixture(scope="module")
def adaptable(tmp_path_factory, tokenizer, shakespeare_text):
    """A tiny checkpoint with gradient statistics (served next to one without them)."""
    model = tiny_model(tokenizer.vocab_size, embedding_size=24, hidden_size=24, seed=5)
    directory = save_checkpoint(tmp_path_factory.mktemp("adapt") / "tiny-adaptable", model, tokenizer, {})
    stats = gradient_statistics(model, tokenizer, shakespeare_text[:3000])
    # A random model's gradients are far from a trained one's: a larger step than the shipped default.
    save_statistics(directory, stats, DynamicSettings(segment=10, lr=3e-3, decay=0.0, eps=1.0))
    return directory


@pytest.fixture(scope="module")
def client(adaptable, served_checkpoint):
    with TestClient(create_app(Settings(models=(str(adaptable), str(served_checkpoint))))) as client:
        yield client


def test_an_adapted_score_learns_from_the_text_and_is_labelled_dynamic(client):
    static = client.post("/v1/score", json={"text": REPEATED}).json()
    dynamic = client.post("/v1/score", json={"text": REPEATED, "adapt": True}).json()
    assert static["evaluation"] == "static" and dynamic["evaluation"] == "dynamic"
    assert dynamic["tokens"] == static["tokens"] and dynamic["chars"] == static["chars"]
    assert "".join(t["text"] for t in dynamic["token_logprobs"]) == REPEATED
    assert dynamic["nll"] < 0.9 * static["nll"], "twelve repeats should teach the model the sentence"


def test_adapting_changes_nothing_for_later_requests(client):
    before = client.post("/v1/score", json={"text": REPEATED}).json()
    client.post("/v1/score", json={"text": REPEATED, "adapt": True})
    after = client.post("/v1/score", json={"text": REPEATED}).json()
    assert after == before


def test_a_model_without_statistics_refuses_adapt_naming_the_field(client):
    response = client.post("/v1/score", json={"text": "to be", "adapt": True, "model": "tiny-lstm"})
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["param"] == "adapt" and "statistics" in error["message"]


def test_adapt_is_a_boolean(client):
    response = client.post("/v1/score", json={"text": "to be", "adapt": "yes"})
    assert response.status_code == 400 and response.json()["error"]["param"] == "adapt"
