"""/v1/embeddings and /v1/neighbours over the app: the vectors as docs/api.md defines them."""

import base64
import struct
import time

import pytest
import torch
from fastapi.testclient import TestClient

from lyricist.app.server import create_app
from lyricist.app.settings import Settings
from lyricist.model import load_checkpoint, save_checkpoint
from lyricist.model.embeddings import text_vectors
from lyricist.model.steps import run_to_end
from lyricist.model.words import count_words, save_words, read_words

from .helpers import tiny_model, torch_threads


@pytest.fixture(scope="module")
def worded_checkpoint(tmp_path_factory, tokenizer, shakespeare_text):
    model = tiny_model(tokenizer.vocab_size, embedding_size=32, hidden_size=48, seed=3)
    path = save_checkpoint(tmp_path_factory.mktemp("words") / "tiny-words", model, tokenizer, {"corpus": "none"})
    save_words(path, shakespeare_text[:200_000], {"text": "tinyshakespeare"})
    return path


@pytest.fixture(scope="module")
def client(worded_checkpoint):
    with TestClient(create_app(Settings(models=(str(worded_checkpoint),)))) as client:
        yield client


def test_a_text_vector_is_the_mean_output_scaled_to_length_one(client, worded_checkpoint):
    answer = client.post("/v1/embeddings", json={"input": "ROMEO: good night"}).json()
    vector = torch.tensor(answer["data"][0]["embedding"])
    checkpoint = load_checkpoint(worded_checkpoint)
    ids = checkpoint.tokenizer.encode("ROMEO: good night", add_bos=True)
    with torch.inference_mode():
        outputs = checkpoint.model.features(torch.tensor([ids])).hidden[0, 1:]
    want = torch.nn.functional.normalize(outputs.mean(dim=0), dim=0)
    torch.testing.assert_close(vector, want, rtol=1e-5, atol=1e-6)
    assert answer["usage"] == {"prompt_tokens": len(ids) - 1, "total_tokens": len(ids) - 1}


def test_base64_carries_the_same_floats(client):
    body = {"input": ["a", "", "KING: away"]}
    floats = client.post("/v1/embeddings", json=body).json()["data"]
    packed = client.post("/v1/embeddings", json={**body, "encoding_format": "base64"}).json()["data"]
    for f, b in zip(floats, packed):
        raw = base64.b64decode(b["embedding"])
        assert list(struct.unpack(f"<{len(raw) // 4}f", raw)) == pytest.approx(f["embedding"], abs=1e-7)


@pytest.mark.parametrize("memory", [{}, {"cache": {"window": 20, "theta": 0.5, "lam": 0.2}},
                                    {"attention": {"window": 12}}])
@pytest.mark.parametrize("threads", [1, 2])
def test_a_texts_vector_has_the_same_bits_beside_any_other_texts_however_its_reading_is_cut(tokenizer, memory,
                                                                                           threads):
    """The texts of a request are read side by side, never fewer than two rows (model/embeddings.py); a text
    read alone takes another kernel and agrees with them to float precision."""
    model = tiny_model(tokenizer.vocab_size, embedding_size=32, hidden_size=48, seed=5, **memory).eval()
    texts = ["ROMEO: good night, good night! parting is such sweet sorrow", "", "KING: away", "a",
             "JULIET:\n" + "O Romeo, Romeo! wherefore art thou Romeo? " * 6]
    with torch.inference_mode(), torch_threads(threads):
        together = run_to_end(text_vectors(model, tokenizer, texts, slice_pieces=256))
        for slice_pieces in (2, 3, 17):
            cut = run_to_end(text_vectors(model, tokenizer, texts[::-1], slice_pieces=slice_pieces))[::-1]
            assert all(torch.equal(a, b) and n == m for (a, n), (b, m) in zip(together, cut))
        for text, (vector, pieces) in zip(texts, together):
            company = run_to_end(text_vectors(model, tokenizer, [texts[-1], text, text, "x"], slice_pieces=7))
            assert torch.equal(company[1][0], vector) and torch.equal(company[2][0], vector)
            assert pieces == len(tokenizer.encode(text))
            (alone, _), = run_to_end(text_vectors(model, tokenizer, [text], slice_pieces=5))
            (whole, _), = run_to_end(text_vectors(model, tokenizer, [text], slice_pieces=256))
            assert torch.equal(alone, whole)
            torch.testing.assert_close(alone, vector, rtol=0, atol=1e-6)


def test_a_text_gets_the_same_vector_beside_any_other_texts(client):
    among = client.post("/v1/embeddings", json={"input": ["ROMEO: good night, sweet prince", "KING: away"]}).json()
    other = client.post("/v1/embeddings", json={"input": ["", "x", "KING: away"]}).json()
    assert other["data"][2]["embedding"] == among["data"][1]["embedding"]
    alone = client.post("/v1/embeddings", json={"input": "KING: away"}).json()["data"][0]["embedding"]
    assert alone == pytest.approx(among["data"][1]["embedding"], abs=1e-6)


def test_the_request_timeout_bounds_all_the_texts_of_a_request_together(worded_checkpoint):
    """Sixty-four long texts, each read well within the timeout, all of them not: a 504 at the timeout, not an
    answer after all of them. The timeout is a third of the time the texts take together on this machine now
    (one alone takes about a sixth: 0.4 s against 2.9 s here), so the test holds however fast the machine is."""
    texts = ["la " * 2000] * 64
    settings = dict(models=(str(worded_checkpoint),), max_prompt_chars=60_000)
    with TestClient(create_app(Settings(**settings))) as patient:
        patient.post("/v1/embeddings", json={"input": texts})  # the first call of a shape is slower
        started = time.perf_counter()
        assert patient.post("/v1/embeddings", json={"input": texts}).status_code == 200
        together = time.perf_counter() - started
    with TestClient(create_app(Settings(**settings, request_timeout_s=together / 3))) as slow:
        started = time.perf_counter()
        response = slow.post("/v1/embeddings", json={"input": texts})
        answered = time.perf_counter() - started
    assert response.status_code == 504 and "LYRICIST_REQUEST_TIMEOUT_S" in response.json()["error"]["message"]
    assert answered < 0.75 * together


@pytest.mark.parametrize("body, field", [({"input": []}, "input"), ({"input": ["x"] * 65}, "input"),
                                         ({"input": "x", "encoding_format": "hex"}, "encoding_format"),
                                         ({"input": "x", "dimensions": 3}, "dimensions")])
def test_bad_embedding_requests_are_400_naming_the_field(client, body, field):
    response = client.post("/v1/embeddings", json=body)
    assert response.status_code == 400 and response.json()["error"]["param"] == field


def test_neighbours_are_the_nearest_training_words_without_the_word_itself(client, worded_checkpoint):
    answer = client.post("/v1/neighbours", json={"word": "Night", "n": 5}).json()
    found = [n["word"] for n in answer["neighbours"]]
    words = read_words(worded_checkpoint)
    assert len(found) == 5 and "night" not in found and all(w in words for w in found)
    similarities = [n["similarity"] for n in answer["neighbours"]]
    assert similarities == sorted(similarities, reverse=True) and all(-1 <= s <= 1 for s in similarities)
    # checked against the definition: the mean of the word's piece embeddings, by cosine
    checkpoint = load_checkpoint(worded_checkpoint)

    def vector(word):
        rows = checkpoint.model.embedding.weight.detach()[checkpoint.tokenizer.encode(" " + word)]
        return torch.nn.functional.normalize(rows.mean(dim=0), dim=0)

    assert similarities[0] == pytest.approx(float(vector("night") @ vector(found[0])), abs=1e-5)


def test_training_words_are_the_texts_words_seen_twice():
    assert count_words("The night, the NIGHT! Lovin' lovin' day 12 12") == {"the": 2, "night": 2, "lovin'": 2}


@pytest.mark.parametrize("body, field", [({"word": "two words"}, "word"), ({"word": "x", "n": 0}, "n"),
                                         ({"word": "x", "n": 101}, "n"), ({"word": "123"}, "word")])
def test_bad_neighbour_requests_are_400_naming_the_field(client, body, field):
    response = client.post("/v1/neighbours", json=body)
    assert response.status_code == 400 and response.json()["error"]["param"] == field
