"""The HTTP API against the ASGI app in process (TestClient runs the lifespan)."""

import json
import math

import pytest
from fastapi.testclient import TestClient

from lyricist.app.server import create_app
from lyricist.app.settings import Settings

from .helpers import ROOT


@pytest.fixture(scope="module")
def client(served_checkpoint):
    settings = Settings(models=(str(served_checkpoint),), max_prompt_chars=500, max_new_tokens=200)
    with TestClient(create_app(settings)) as client:
        yield client


@pytest.fixture(scope="module")
def keyed_client(served_checkpoint):
    with TestClient(create_app(Settings(models=(str(served_checkpoint),), api_keys=("k1", "s3cret")))) as client:
        yield client


def assert_error(response, status, *words):
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    for word in words:
        assert word in body["error"]["message"]
    return body["error"]


def test_health_readiness_and_models(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"status": "ready", "models": ["tiny-lstm"]}
    (card,) = client.get("/v1/models").json()["data"]
    assert card["id"] == "tiny-lstm" and card["default"] is True and card["object"] == "model"
    assert card["cell"] == "lstm" and card["hidden_size"] == 48 and card["vocab_size"] == 1000
    assert card["trained_on"] == "tinyshakespeare" and card["val_nats_per_char"] == 4.2 and card["parameters"] > 0
    assert card["start"] is None  # read from the start marker alone


def test_index_page_is_html(client):
    response = client.get("/")
    assert response.status_code == 200 and "text/html" in response.headers["content-type"]
    assert "/v1/predict" in response.text


def test_predict_word_and_token(client):
    body = client.post("/v1/predict", json={"prompt": "ROMEO:\nI", "top_k": 5}).json()
    assert body["model"] == "tiny-lstm" and body["unit"] == "word" and body["prompt_tokens"] > 1
    probs = [c["prob"] for c in body["distribution"]]
    assert len(probs) == 5 and probs == sorted(probs, reverse=True)
    assert body["coverage"] == pytest.approx(sum(probs))
    assert all(c["logprob"] == pytest.approx(math.log(c["prob"])) for c in body["distribution"])
    token = client.post("/v1/predict", json={"prompt": "ROMEO:", "top_k": 3, "unit": "token"}).json()
    assert token["unit"] == "token" and len(token["distribution"]) == 3 and token["entropy"] > 0


def test_generate_is_reproducible_with_its_reported_seed(client):
    first = client.post("/v1/generate", json={"prompt": "KING:", "max_new_tokens": 12}).json()
    again = client.post("/v1/generate", json={"prompt": "KING:", "max_new_tokens": 12, "seed": first["seed"]}).json()
    assert first["text"] == again["text"] and first["finish_reason"] in ("length", "eos")
    assert first["usage"]["prompt_tokens"] > 1
    assert "tokens" not in first


def test_generate_with_logprobs_lists_tokens(client):
    body = client.post("/v1/generate", json={"prompt": "A", "max_new_tokens": 4, "logprobs": 2,
                                             "temperature": 0}).json()
    assert len(body["tokens"]) == body["usage"]["completion_tokens"] == 4
    assert "".join(t["text"] for t in body["tokens"]) == body["text"]
    assert all(len(t["top"]) == 2 for t in body["tokens"])


def test_generate_and_predict_after_a_typed_space(client, served_checkpoint):
    """The engine reads a prompt that ends in a space as the in-process generation does: the text goes on
    after the space, which its first token leaves out."""
    from lyricist.model import SamplingParams, generate, load_checkpoint

    ckpt = load_checkpoint(served_checkpoint)
    want = "".join(generate(ckpt.model, ckpt.tokenizer, "KING: ", 8, SamplingParams(temperature=0)))
    body = client.post("/v1/generate", json={"prompt": "KING: ", "max_new_tokens": 8, "temperature": 0,
                                             "logprobs": 3}).json()
    assert body["text"] == want and "".join(t["text"] for t in body["tokens"]) == want
    assert body["usage"]["prompt_tokens"] == len(ckpt.tokenizer.encode("KING: ", add_bos=True))
    first = body["tokens"][0]
    assert bytes(first["bytes"]).decode() == first["text"] and first["logprob"] > -50
    assert not any(top["text"].startswith(" ") for top in first["top"])
    tokens = client.post("/v1/predict", json={"prompt": "KING: ", "top_k": 5, "unit": "token"}).json()
    assert not any(c["text"].startswith(" ") for c in tokens["distribution"])


def test_generate_stream_sends_tokens_then_the_end_then_done(client):
    request = {"prompt": "ROMEO:", "max_new_tokens": 8, "seed": 4, "stream": True}
    with client.stream("POST", "/v1/generate", json=request) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["x-accel-buffering"] == "no"
        lines = [line for line in response.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    events = [json.loads(line[6:]) for line in lines[:-1]]
    final = events[-1]
    assert final["finish_reason"] == "length" and final["usage"]["completion_tokens"] == 8
    assert "".join(e["text"] for e in events[:-1]) == final["text"]
    plain = client.post("/v1/generate", json={**request, "stream": False}).json()
    assert plain["text"] == final["text"]


def test_score_reports_consistent_figures(client):
    body = client.post("/v1/score", json={"text": "To be, or not to be"}).json()
    assert body["chars"] == 19 and body["tokens"] == len(body["token_logprobs"])
    assert body["nll"] == pytest.approx(-sum(t["logprob"] for t in body["token_logprobs"]), rel=1e-6)
    assert body["nats_per_char"] == pytest.approx(body["nll"] / 19)
    assert body["perplexity"] == pytest.approx(math.exp(body["nll"] / body["tokens"]))
    assert "".join(t["text"] for t in body["token_logprobs"]) == "To be, or not to be"


def test_completions_echo_with_zero_tokens_scores_the_prompt(client):
    body = client.post("/v1/completions", json={"prompt": "To be, or not", "max_tokens": 0, "echo": True,
                                                "logprobs": 0}).json()
    (choice,) = body["choices"]
    assert choice["text"] == "To be, or not" and body["object"] == "text_completion"
    score = client.post("/v1/score", json={"text": "To be, or not"}).json()
    assert choice["logprobs"]["token_logprobs"] == pytest.approx([t["logprob"] for t in score["token_logprobs"]])
    assert choice["logprobs"]["text_offset"][:2] == [0, len(choice["logprobs"]["tokens"][0])]


MIXED = "Ça va? 你好 🎸"  # letters in and out of the vocabulary, and a character of four byte pieces


def test_token_texts_join_to_the_text_and_each_token_carries_its_bytes(client):
    tokens = client.post("/v1/score", json={"text": MIXED}).json()["token_logprobs"]
    assert "".join(t["text"] for t in tokens) == MIXED
    assert bytes(b for t in tokens for b in t["bytes"]) == MIXED.encode()
    assert [t["text"] for t in tokens[-4:]] == ["", "", "", "🎸"]
    echo = client.post("/v1/completions", json={"prompt": MIXED, "max_tokens": 0, "echo": True, "logprobs": 0}).json()
    logprobs = echo["choices"][0]["logprobs"]
    assert logprobs["tokens"] == [t["text"] for t in tokens]
    assert logprobs["token_bytes"] == [t["bytes"] for t in tokens]


def test_a_typographic_apostrophe_is_read_as_the_ascii_one_and_shown_as_typed(client):
    typed, plain = "KING: I don\u2019t know thee, \u2018tis so.", "KING: I don't know thee, 'tis so."
    curly = client.post("/v1/score", json={"text": typed}).json()
    ascii_ = client.post("/v1/score", json={"text": plain}).json()
    assert curly["nll"] == ascii_["nll"] and curly["tokens"] == ascii_["tokens"]  # the vocabulary has no piece for ’
    assert "".join(t["text"] for t in curly["token_logprobs"]) == typed
    assert bytes(b for t in curly["token_logprobs"] for b in t["bytes"]) == typed.encode()
    echo = client.post("/v1/completions", json={"prompt": typed, "max_tokens": 0, "echo": True, "logprobs": 0}).json()
    assert echo["choices"][0]["text"] == typed
    assert "".join(echo["choices"][0]["logprobs"]["tokens"]) == typed


@pytest.mark.parametrize("line_break", ["\r\n", "\r"])
def test_a_text_typed_on_windows_or_an_old_mac_is_read_as_its_lf_copy_and_shown_as_typed(client, line_break):
    lf = "ROMEO:\nBut soft, what light\n\nJULIET:\nAy me"
    typed = lf.replace("\n", line_break)
    for path, extra in (("/v1/predict", {"top_k": 5}), ("/v1/generate", {"max_new_tokens": 6, "seed": 3}),
                        ("/v1/lines", {"n": 2, "seed": 3})):
        answers = [client.post(path, json={"prompt": text, **extra}).json() for text in (typed, lf)]
        assert {**answers[0], "id": None} == {**answers[1], "id": None}  # a generation's id is its own
    scored, lf_scored = (client.post("/v1/score", json={"text": text}).json() for text in (typed, lf))
    assert scored["nll"] == lf_scored["nll"] and scored["tokens"] == lf_scored["tokens"]
    assert "".join(t["text"] for t in scored["token_logprobs"]) == typed
    echo = client.post("/v1/completions", json={"prompt": typed, "max_tokens": 0, "echo": True}).json()
    assert echo["choices"][0]["text"] == typed


@pytest.mark.skipif(not (ROOT / "checkpoints" / "songs-lstm").exists(), reason="the shipped songs model is absent")
def test_a_stop_string_typed_with_windows_line_breaks_stops_at_the_line_break():
    """What the model writes uses LF; a stop of "\r\n" (or "\r") is a line break too."""
    body = {"prompt": "Twinkle, twinkle, little star,\n", "max_new_tokens": 30, "temperature": 0}
    with TestClient(create_app(Settings(models=(str(ROOT / "checkpoints" / "songs-lstm"),)))) as songs:
        whole = songs.post("/v1/generate", json=body).json()["text"]
        assert "\n" in whole
        for stop in ("\r\n", "\r", "\n"):
            answer = songs.post("/v1/generate", json={**body, "stop": [stop]}).json()
            assert answer["finish_reason"] == "stop" and answer["text"] == whole[:whole.index("\n")], stop


def test_generated_tokens_and_their_alternatives_carry_bytes(client, tokenizer):
    request = {"prompt": "你", "max_new_tokens": 60, "logprobs": 5, "temperature": 3, "seed": 5}
    body = client.post("/v1/generate", json=request).json()
    tokens = body["tokens"]
    assert "".join(t["text"] for t in tokens) == body["text"]
    assert all(bytes(t["bytes"]) == tokenizer.piece_bytes[t["id"]] for t in tokens)
    assert any(t["bytes"][0] >= 0x80 for t in tokens)  # byte pieces came up
    alternatives = [alt for t in tokens for alt in t["top"]]
    assert all(bytes(alt["bytes"]) in tokenizer.piece_bytes for alt in alternatives)
    with client.stream("POST", "/v1/generate", json={**request, "stream": True}) as response:
        events = [json.loads(line[6:]) for line in response.iter_lines() if line and line != "data: [DONE]"]
    assert [e["token"]["bytes"] for e in events[:-1]] == [t["bytes"] for t in tokens]


@pytest.mark.parametrize("unit", ["word", "token"])
def test_predict_lists_no_lone_byte_piece_or_replacement_character(client, unit):
    body = client.post("/v1/predict", json={"prompt": "", "top_k": 100, "unit": unit, "temperature": 4}).json()
    texts = [c["text"] for c in body["distribution"]]
    assert len(texts) == 100 and not any("\ufffd" in text for text in texts)


@pytest.mark.parametrize("body, field", [
    ({"prompt": "x", "top_k": 0}, "top_k"),
    ({"prompt": "x", "top_k": 101}, "top_k"),
    ({"prompt": "x", "unit": "line"}, "unit"),
    ({"prompt": 3}, "prompt"),
    ({}, "prompt"),
])
def test_predict_validation_errors_use_the_envelope(client, body, field):
    error = assert_error(client.post("/v1/predict", json=body), 400, field)
    assert error["param"] == field and error["type"] == "invalid_request_error"


@pytest.mark.parametrize("body, words", [
    ({"temperature": 6}, ["temperature", "5"]),
    ({"top_p": 0}, ["top_p"]),
    ({"min_p": 1}, ["min_p"]),
    ({"repetition_penalty": 0}, ["repetition_penalty"]),
    ({"noise": -1}, ["noise"]),
    ({"max_new_tokens": 201}, ["max_new_tokens", "200"]),
    ({"max_new_tokens": 0}, ["max_new_tokens"]),
    ({"logprobs": 21}, ["logprobs", "20"]),
    ({"stop": ["a", "b", "c", "d", "e"]}, ["stop"]),
    ({"seed": -1}, ["seed"]),
])
def test_generate_out_of_range_values_are_400_naming_the_field(client, body, words):
    assert_error(client.post("/v1/generate", json=body), 400, *words)


def test_malformed_json_is_400(client):
    assert_error(client.post("/v1/generate", content=b"{not json", headers={"content-type": "application/json"}), 400)


def test_unknown_path_and_model_are_404(client):
    assert_error(client.get("/v2/nothing"), 404, "/v2/nothing")
    error = assert_error(client.post("/v1/generate", json={"model": "nope"}), 404, "nope")
    assert error["param"] == "model"


def test_prompt_and_body_over_the_limits_are_413(client):
    assert_error(client.post("/v1/generate", json={"prompt": "x" * 501}), 413, "501", "500")
    assert_error(client.post("/v1/score", json={"text": "x" * 501}), 413)
    assert_error(client.post("/v1/predict", content=b"x" * 10**6, headers={"content-type": "application/json"}), 413)


def test_api_keys_guard_v1_only(keyed_client):
    assert_error(keyed_client.get("/v1/models"), 401)
    assert_error(keyed_client.get("/v1/models", headers={"Authorization": "Bearer wrong"}), 401)
    assert keyed_client.get("/v1/models", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    for path in ("/", "/healthz", "/readyz", "/metrics"):
        assert keyed_client.get(path).status_code == 200


def test_metrics_have_the_contract_names(client):
    client.post("/v1/generate", json={"prompt": "x", "max_new_tokens": 2})
    client.post("/v1/predict", json={"prompt": "x", "top_k": 0})
    text = client.get("/metrics").text
    for name in ("lyricist_requests_total", "lyricist_request_duration_seconds_bucket",
                 "lyricist_time_to_first_token_seconds_bucket", "lyricist_time_per_output_token_seconds_bucket",
                 "lyricist_prompt_tokens_total", "lyricist_generated_tokens_total", "lyricist_batch_size_bucket",
                 "lyricist_queue_depth", "lyricist_running_sequences", "lyricist_rejected_requests_total",
                 "lyricist_model_info"):
        assert name in text, name
    assert 'lyricist_requests_total{endpoint="/v1/generate",status="200"}' in text
    assert 'lyricist_rejected_requests_total{reason="validation"}' in text
    assert 'lyricist_model_info{cell="lstm",model="tiny-lstm"' in text


def test_a_full_queue_answers_429_with_retry_after(served_checkpoint):
    settings = Settings(models=(str(served_checkpoint),), max_batch_size=1, max_queue=1)
    with TestClient(create_app(settings)) as client:
        engine = client.app.state.registry.default
        engine.max_queue = 0  # nothing may wait: the next request is refused at once
        error = assert_error(client.post("/v1/generate", json={"prompt": "x"}), 429)
        assert error["code"] == "queue_full"
        response = client.post("/v1/predict", json={"prompt": "x"})
        assert response.status_code == 429 and response.headers["retry-after"] == "1"


@pytest.mark.parametrize("path, field, body", [
    ("/v1/score", "text", '{"text": "ab\\ud800"}'),
    ("/v1/predict", "prompt", '{"prompt": "ab\\ud800"}'),
    ("/v1/generate", "prompt", '{"prompt": "\\udfff", "max_new_tokens": 2}'),
    ("/v1/generate", "stop.0", '{"prompt": "a", "stop": ["\\ud800"], "max_new_tokens": 2}'),
    ("/v1/completions", "prompt", '{"prompt": "ab\\ud800", "max_tokens": 2}'),
])
def test_a_lone_surrogate_is_a_bad_value_not_a_crash(client, path, field, body):
    # Valid JSON ("\ud800" is a legal escape) but no Unicode text: 400, naming the field.
    response = client.post(path, content=body, headers={"content-type": "application/json"})
    error = assert_error(response, 400, "lone surrogate")
    assert error["param"].startswith(field)


def test_a_body_that_is_not_json_says_what_the_body_must_be(client):
    response = client.post("/v1/generate", content=b'{"prompt": "a"}',
                           headers={"content-type": "application/x-www-form-urlencoded"})
    error = assert_error(response, 400, "must be JSON", "Content-Type: application/json",
                         "application/x-www-form-urlencoded")
    assert error["code"] == "invalid_content_type"


@pytest.mark.parametrize("path, body, field, nearest", [
    ("/v1/lines", {"prompt": "x\n", "syllable": 8}, "syllable", "syllables"),
    ("/v1/verse", {"prompt": "", "scheme": "AA", "sylables": 6}, "sylables", "syllables"),
    ("/v1/predict", {"prompt": "x", "rhyme_with": "night"}, "rhyme_with", "rhymes_with"),
    ("/v1/predict", {"prompt": "x", "topk": 3}, "topk", "top_k"),
    ("/v1/generate", {"prompt": "x", "max_tokens": 3}, "max_tokens", "max_new_tokens"),
    ("/v1/score", {"txt": "x"}, "txt", "text"),
    ("/v1/analyze", {"text": "x", "modle": "tiny-lstm"}, "modle", "model"),
    ("/v1/completions", {"prompt": "x", "max_new_tokens": 3}, "max_new_tokens", "max_tokens"),
    ("/v1/generate", {"prompt": "x", "colour": "blue"}, "colour", None),
])
def test_an_unknown_field_is_400_naming_it_and_the_nearest_known_one(client, path, body, field, nearest):
    response = client.post(path, json=body)
    error = assert_error(response, 400, f"{field}: unknown field")
    assert error["param"] == field and error["code"] == "unknown_field"
    if nearest:
        assert f"did you mean {nearest}?" in error["message"]
    else:
        assert "did you mean" not in error["message"]


def test_completions_accept_openais_own_fields_that_lyricist_does_not_use(client):
    body = {"prompt": "x", "max_tokens": 2, "user": "me", "best_of": 1, "logit_bias": {"50256": -100}, "suffix": ""}
    assert client.post("/v1/completions", json=body).status_code == 200
