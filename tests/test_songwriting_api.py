"""The songwriting API over the real app: /v1/predict with rhymes_with / syllables, /v1/analyze, /v1/lines,
/v1/verse, their bad inputs, and the `lyricist lines` / `lyricist predict` commands.

Most tests use the tiny random-weight checkpoint (its lines are nonsense, but every constraint must hold
whatever the model writes); one uses the shipped songs model with small requests. Every returned line is
checked against the dictionary by this file's own reading of it, not by the code that wrote the line."""

import itertools
import math

import pytest
from fastapi.testclient import TestClient

from lyricist.app.server import create_app
from lyricist.app.settings import Settings

from .cmudict_reading import WORD, cmudict as read_cmudict, meets_stress
from .helpers import ROOT


@pytest.fixture(scope="module")
def client(served_checkpoint):
    settings = Settings(models=(str(served_checkpoint),), max_prompt_chars=2000)
    with TestClient(create_app(settings)) as client:
        yield client


@pytest.fixture(scope="module")
def cmudict():
    """word -> [(syllables, rhyme part)] straight from the dictionary file (the tests' own reading)."""
    return {word: [(s.syllables, s.rhyme) for s in soundings] for word, soundings in read_cmudict().items()}


def syllable_sums(cmudict, text: str) -> set[int]:
    sums = {0}
    for word in WORD.findall(text):
        counts = {s for s, _ in cmudict.get(word.lower(), [])}
        assert counts, f"{word!r} of {text!r} is not in the dictionary"
        sums = {a + b for a in sums for b in counts}
    return sums


def rhymes(cmudict, a: str, b: str) -> bool:
    a, b = a.lower(), b.lower()
    return a != b and bool({r for _, r in cmudict.get(a, [])} & {r for _, r in cmudict.get(b, [])})


def end_word(text: str) -> str:
    return WORD.findall(text)[-1]


def assert_error(response, status: int, param: str | None, *words: str) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["param"] == param, error
    for word in words:
        assert word in error["message"], error
    return error


# -- /v1/predict under constraints ----------------------------------------------------------------

PROMPT = "ROMEO:\nI take my breath and"


@pytest.fixture(scope="module")
def text_only_checkpoint(tmp_path_factory, tokenizer):
    """A tiny random model that never writes a byte piece or ends the text: every next piece is text of its own,
    so a word's probability is a plain product (the brute force below)."""
    import torch

    from lyricist.model import save_checkpoint

    from .helpers import tiny_model

    model = tiny_model(tokenizer.vocab_size, embedding_size=32, hidden_size=48, seed=5)
    with torch.no_grad():
        for i, data in enumerate(tokenizer.piece_bytes):
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError:
                text = ""
            if not text or i == tokenizer.eos_id:
                model.decoder.bias[i] = -1e4
    return save_checkpoint(tmp_path_factory.mktemp("text-only") / "text-only", model, tokenizer, {"corpus": "none"})


def brute_force_word_probs(checkpoint_dir, prompt: str, words) -> dict[str, float]:
    """Each word after no space or one: its pieces' probabilities times that of a piece that starts a new unit."""
    import torch

    from lyricist.model import load_checkpoint

    checkpoint = load_checkpoint(checkpoint_dir)
    model, tokenizer = checkpoint.model.eval(), checkpoint.tokenizer
    texts = [data.decode("utf-8", errors="ignore") for data in tokenizer.piece_bytes]
    new_unit = torch.tensor([bool(t) and not (t[0].isalnum() or t[0] in "'\u2019") for t in texts])
    out = {}
    with torch.no_grad():
        head = tokenizer.encode(prompt, add_bos=True)
        for word in words:
            out[word] = 0.0
            for lead in ("", " "):  # what follows the prompt is read on its own: "and" then "Beth" is "Beth"
                pieces = tokenizer.encode(lead + word)
                logits, _ = model(torch.tensor([head + pieces]))
                logp = torch.log_softmax(logits[0].double(), -1)
                steps = logp[torch.arange(len(head) - 1, len(head) + len(pieces) - 1), torch.tensor(pieces)].sum()
                out[word] += float(steps.exp() * logp[-1].exp()[new_unit].sum())
    return out


def test_constrained_predict_is_renormalised_and_its_mass_is_the_qualifying_words(client, cmudict):
    body = client.post("/v1/predict", json={"prompt": PROMPT, "rhymes_with": "breath", "top_k": 100}).json()
    words = [c["text"] for c in body["distribution"]]
    assert body["unit"] == "word" and body["rhymes_with_known"] is True
    assert 0 < len(words) <= 100 and len(set(words)) == len(words)
    assert all(rhymes(cmudict, w, "breath") for w in words), words
    assert sum(c["prob"] for c in body["distribution"]) == pytest.approx(1, abs=1e-6)  # every qualifying word listed
    assert body["coverage"] == pytest.approx(1, abs=1e-6)
    assert 0 < body["constraint_mass"] < 1

    # With two constraints, each word's probability times the mass is the same figure as with one.
    both = client.post("/v1/predict", json={"prompt": PROMPT, "rhymes_with": "breath", "syllables": 1,
                                            "top_k": 100}).json()
    wide = {c["text"]: c["prob"] * body["constraint_mass"] for c in body["distribution"]}
    assert both["distribution"] and sum(c["prob"] for c in both["distribution"]) == pytest.approx(1, abs=1e-6)
    for c in both["distribution"]:
        assert 1 in {s for s, _ in cmudict[c["text"].lower()]}
        assert c["prob"] * both["constraint_mass"] == pytest.approx(wide[c["text"]], rel=1e-3), c


def test_constraint_mass_is_the_sum_of_the_qualifying_words_probabilities(text_only_checkpoint, cmudict):
    """Checked against a brute force (each qualifying word scored on its own) on a model with no byte pieces."""
    qualifying = [w for w in cmudict if WORD.fullmatch(w) and rhymes(cmudict, w, "breath")]
    forms = {f for w in qualifying for f in (w, w[:1].upper() + w[1:])}
    brute = brute_force_word_probs(text_only_checkpoint, PROMPT, forms)
    with TestClient(create_app(Settings(models=(str(text_only_checkpoint),)))) as client:
        body = client.post("/v1/predict", json={"prompt": PROMPT, "rhymes_with": "breath", "top_k": 100}).json()
    # the service also counts what the brute force leaves out (two spaces, a tab, ...): a relative 0.5% apart
    assert body["constraint_mass"] == pytest.approx(sum(brute.values()), rel=0.005)
    for c in body["distribution"]:
        assert c["prob"] * body["constraint_mass"] == pytest.approx(brute[c["text"]], rel=0.005), c


def test_unconstrained_predict_has_no_constraint_fields(client):
    body = client.post("/v1/predict", json={"prompt": PROMPT, "top_k": 3}).json()
    assert "constraint_mass" not in body and "rhymes_with_known" not in body


def test_a_word_the_dictionary_lacks_is_estimated_and_said_so(client):
    body = client.post("/v1/predict", json={"prompt": PROMPT, "rhymes_with": "glorpnight", "top_k": 5}).json()
    assert body["rhymes_with_known"] is False and body["distribution"], body
    lines = client.post("/v1/lines", json={"prompt": "A\n", "rhymes_with": "glorpnight", "n": 1, "seed": 1,
                                           "syllables": [2, 8]}).json()
    assert lines["rhymes_with_known"] is False


# -- /v1/lines and /v1/verse ------------------------------------------------------------------------

def test_every_line_meets_its_constraints(client, cmudict):
    request = {"prompt": "KING:\nThe night is long\n", "n": 3, "syllables": 6, "rhymes_with": "day", "seed": 5}
    body = client.post("/v1/lines", json=request).json()
    assert body["seed"] == 5 and 1 <= len(body["lines"]) <= 3 and body["rhymes_with_known"] is True
    assert body["usage"]["prompt_tokens"] > 1 and body["usage"]["completion_tokens"] > 0
    for line in body["lines"]:
        assert "\n" not in line["text"] and line["end_word"] == end_word(line["text"])
        assert 6 in syllable_sums(cmudict, line["text"]) and line["syllables"] == 6
        assert rhymes(cmudict, line["end_word"], "day") and line["rhymes"] is True
        assert line["logprob"] < 0
        assert line["nats_per_char"] == pytest.approx(-line["logprob"] / (len(line["text"]) + 1))
    ranged = client.post("/v1/lines", json={"prompt": "", "n": 2, "syllables": [3, 5], "seed": 2}).json()
    for line in ranged["lines"]:
        assert syllable_sums(cmudict, line["text"]) & {3, 4, 5} and 3 <= line["syllables"] <= 5
        assert line["rhymes"] is False


def test_lines_are_reproducible_with_their_seed(client):
    request = {"prompt": "Sing to me\n", "n": 2, "syllables": [4, 6], "temperature": 1.0}
    first = client.post("/v1/lines", json=request).json()
    again = client.post("/v1/lines", json={**request, "seed": first["seed"]}).json()
    assert first["lines"] == again["lines"] and first["seed"] == again["seed"]


def test_verse_keeps_its_scheme(client, cmudict):
    request = {"prompt": "", "scheme": "ABAB", "syllables": [6, 4, 6, 4], "seed": 3}
    body = client.post("/v1/verse", json=request).json()
    lines = body["lines"]
    assert [line["rhyme"] for line in lines] == list("ABAB") and body["seed"] == 3
    assert body["text"] == "\n".join(line["text"] for line in lines)
    assert [line["syllables"] for line in lines] == [6, 4, 6, 4]
    assert all(line["rhymes"] for line in lines)
    for line, count in zip(lines, [6, 4, 6, 4]):
        assert count in syllable_sums(cmudict, line["text"])
    ends = [end_word(line["text"]).lower() for line in lines]
    assert len(set(ends)) == 4  # no end word twice
    for (i, a), (j, b) in itertools.combinations(enumerate(ends), 2):
        assert rhymes(cmudict, a, b) == (lines[i]["rhyme"] == lines[j]["rhyme"]), (a, b)
    assert body["usage"]["completion_tokens"] > 0
    again = client.post("/v1/verse", json=request).json()
    assert again["text"] == body["text"]


def test_lines_and_verses_keep_a_stress_pattern(client):
    body = client.post("/v1/lines", json={"prompt": "KING:\n", "n": 2, "stress": "0101", "seed": 4}).json()
    for line in body["lines"]:
        assert line["syllables"] == 4 and meets_stress(line["text"], "0101"), line["text"]
    patterns = ["010101", "0101"]
    verse = client.post("/v1/verse", json={"prompt": "", "scheme": "AA", "stress": patterns, "seed": 2}).json()
    for line, pattern in zip(verse["lines"], patterns):
        assert line["syllables"] == len(pattern) and meets_stress(line["text"], pattern), (line["text"], pattern)


def test_free_lines_in_a_verse(client, cmudict):
    body = client.post("/v1/verse", json={"prompt": "", "scheme": "AXA", "syllables": 5, "seed": 1}).json()
    a1, x, a2 = (end_word(line["text"]).lower() for line in body["lines"])
    assert rhymes(cmudict, a1, a2) and x not in (a1, a2)
    assert [line["rhymes"] for line in body["lines"]] == [True, False, True]


# -- /v1/analyze ------------------------------------------------------------------------------------

TWINKLE = ("Twinkle, twinkle, little star,\nHow I wonder what you are.\nUp above the world so high,\n"
           "Like a diamond in the sky.")


def test_analyze_counts_and_finds_the_scheme(client):
    text = TWINKLE + "\n\nThe glorpnight came along\nAnd sang a song\n"
    body = client.post("/v1/analyze", json={"text": text}).json()
    assert set(body) == {"model", "stanzas"} and body["model"] == "tiny-lstm"
    first, second = body["stanzas"]
    assert first["meter"]["name"] == "trochaic tetrameter" and 0.75 <= first["meter"]["fit"] <= 1
    assert second["meter"] is None  # too few stressed syllables to tell
    assert first["scheme"] == "AABB" and second["scheme"] == "AA"
    star = first["lines"][0]
    assert set(star) == {"text", "syllables", "stress", "end_word", "rhyme_part", "rhyme", "unknown_words",
                         "nats_per_char"}
    assert star["text"] == "Twinkle, twinkle, little star," and star["syllables"] == 7
    assert len(star["stress"]) == 7 and set(star["stress"]) <= {"0", "1"}
    assert star["end_word"] == "star" and star["rhyme_part"] == "AA R" and star["rhyme"] == "A"
    assert [line["rhyme"] for line in first["lines"]] == list("AABB")
    assert "glorpnight" in second["lines"][0]["unknown_words"] and second["lines"][1]["unknown_words"] == []
    assert all(line["nats_per_char"] > 0 for stanza in body["stanzas"] for line in stanza["lines"])


@pytest.mark.parametrize("text", [TWINKLE, "I waited\u2026 and waited\u2026\nfor you \u2013 you\u2019re late\u2026"])
def test_analyze_surprise_adds_up_to_the_score(client, text):
    """Each line's nats/char covers its characters and its line break: together, the whole text's nll (also where
    the model reads a character as several: an ellipsis as three full stops)."""
    lines = client.post("/v1/analyze", json={"text": text}).json()["stanzas"][0]["lines"]
    score = client.post("/v1/score", json={"text": text}).json()
    chars = [len(line["text"]) + 1 for line in lines[:-1]] + [len(lines[-1]["text"])]
    assert sum(chars) == score["chars"] == len(text)
    assert sum(line["nats_per_char"] * n for line, n in zip(lines, chars)) == pytest.approx(score["nll"], rel=1e-9)
    assert client.post("/v1/analyze", json={"text": ""}).json()["stanzas"] == []


# -- bad input: 400 naming the field, impossible constraints: 422 ----------------------------------

BAD = [
    ("/v1/predict", {"rhymes_with": ""}, "rhymes_with"),
    ("/v1/predict", {"rhymes_with": "1234"}, "rhymes_with"),
    ("/v1/predict", {"rhymes_with": "a" * 200}, "rhymes_with"),
    ("/v1/predict", {"rhymes_with": "ni\x07ght"}, "rhymes_with"),
    ("/v1/predict", {"rhymes_with": "two words"}, "rhymes_with"),
    ("/v1/predict", {"rhymes_with": "night!"}, "rhymes_with"),
    ("/v1/predict", {"rhymes_with": 5}, "rhymes_with"),
    ("/v1/predict", {"rhyme": "slant", "rhymes_with": "night"}, "rhyme"),
    ("/v1/predict", {"syllables": 0}, "syllables"),
    ("/v1/predict", {"syllables": 13}, "syllables"),
    ("/v1/predict", {"syllables": "2"}, "syllables"),
    ("/v1/predict", {"unit": "token", "rhymes_with": "night"}, "unit"),
    ("/v1/predict", {"unit": "token", "syllables": 2}, "unit"),
    ("/v1/lines", {"syllables": 0}, "syllables"),
    ("/v1/lines", {"syllables": 25}, "syllables"),
    ("/v1/lines", {"syllables": [8, 6]}, "syllables"),
    ("/v1/lines", {"syllables": [4, 6, 8]}, "syllables"),
    ("/v1/lines", {"syllables": [0, 6]}, "syllables"),
    ("/v1/lines", {"n": 0}, "n"),
    ("/v1/lines", {"n": 9}, "n"),
    ("/v1/lines", {"rhymes_with": "\u00a0"}, "rhymes_with"),
    ("/v1/lines", {"rhymes_with": "night", "rhyme": "eye"}, "rhyme"),
    ("/v1/lines", {"temperature": 6}, "temperature"),
    ("/v1/verse", {"scheme": "abab"}, "scheme"),
    ("/v1/verse", {"scheme": "AB-B"}, "scheme"),
    ("/v1/verse", {"scheme": ""}, "scheme"),
    ("/v1/verse", {"scheme": "A" * 17}, "scheme"),
    ("/v1/verse", {"scheme": "ABAB", "syllables": [8, 6, 8]}, "syllables"),
    ("/v1/verse", {"scheme": "AB", "syllables": [8, 25]}, "syllables"),
    ("/v1/verse", {"scheme": "AB", "syllables": 0}, "syllables"),
    ("/v1/lines", {"stress": ""}, "stress"),
    ("/v1/lines", {"stress": "0120"}, "stress"),
    ("/v1/lines", {"stress": "0" * 25}, "stress"),
    ("/v1/lines", {"stress": "0101", "syllables": 6}, "stress"),
    ("/v1/lines", {"stress": ["0101"]}, "stress"),
    ("/v1/verse", {"stress": ["0101"]}, "stress"),
    ("/v1/verse", {"stress": ["0101", "01x1"]}, "stress"),
    ("/v1/verse", {"stress": ["0101", "010"], "syllables": [4, 4]}, "stress"),
    ("/v1/analyze", {"text": 5}, "text"),
]


@pytest.mark.parametrize(("path", "fields", "param"), BAD, ids=[f"{p}-{f}" for p, f, _ in BAD])
def test_bad_input_is_400_naming_the_field(client, path, fields, param):
    body = {**({} if path == "/v1/analyze" else {"prompt": "x"}), **({"scheme": "AA"} if path == "/v1/verse" else {}),
            **fields}
    error = assert_error(client.post(path, json=body), 400, param, param)
    assert error["type"] == "invalid_request_error"
    # a bad value is reported before an unknown model
    assert_error(client.post(path, json={**body, "model": "no-such-model"}), 400, param)


@pytest.mark.parametrize("path", ["/v1/lines", "/v1/verse", "/v1/analyze"])
def test_unknown_model_is_404(client, path):
    body = {"/v1/lines": {"prompt": "x"}, "/v1/verse": {"prompt": "x", "scheme": "AA"}, "/v1/analyze": {"text": "x"}}
    assert_error(client.post(path, json={**body[path], "model": "no-such-model"}), 404, "model")


IMPOSSIBLE = [
    ("/v1/predict", {"rhymes_with": "orange"}, "rhymes_with", "orange"),
    ("/v1/predict", {"rhymes_with": "came", "syllables": 9}, "syllables", "9"),
    ("/v1/lines", {"rhymes_with": "orange"}, "rhymes_with", "orange"),
    ("/v1/lines", {"rhymes_with": "silver", "syllables": 2}, "syllables", "silver"),
]


@pytest.mark.parametrize(("path", "fields", "param", "word"), IMPOSSIBLE, ids=[f"{p}-{f}" for p, f, *_ in IMPOSSIBLE])
def test_constraints_nothing_meets_are_422_naming_which(client, path, fields, param, word):
    error = assert_error(client.post(path, json={"prompt": "x\n", **fields}), 422, param, word)
    assert error["code"] == "constraint_unsatisfiable"


def test_openapi_declares_the_songwriting_errors(client):
    paths = client.get("/openapi.json").json()["paths"]
    for path in ("/v1/lines", "/v1/verse", "/v1/predict"):
        assert {"400", "404", "422"} <= set(paths[path]["post"]["responses"])
    assert "422" not in paths["/v1/generate"]["post"]["responses"]


# -- the command line --------------------------------------------------------------------------------

def test_lines_and_predict_commands(served_checkpoint, capsys, cmudict):
    from lyricist.model.cli import main

    assert main(["lines", "--model", str(served_checkpoint), "--prompt", "O", "--syllables", "4-5",
                 "--rhymes-with", "day", "-n", "2", "--seed", "3"]) == 0
    out = capsys.readouterr()
    printed = [line.split("  (")[0] for line in out.out.splitlines()]
    assert printed and "seed 3" in out.err
    for text in printed:
        assert syllable_sums(cmudict, text) & {4, 5} and rhymes(cmudict, end_word(text), "day")
    assert main(["predict", "--model", str(served_checkpoint), "--prompt", PROMPT, "--rhymes-with", "breath",
                 "--syllables", "1", "--top-k", "3"]) == 0
    out = capsys.readouterr()
    assert len(out.out.splitlines()) == 3 and "constraint mass" in out.err
    assert main(["lines", "--model", str(served_checkpoint), "--prompt", "O", "--rhymes-with", "12"]) == 1
    assert "--rhymes-with" in capsys.readouterr().err
    assert main(["lines", "--model", str(served_checkpoint), "--prompt", "O", "--stress", "10101", "-n", "1",
                 "--seed", "2"]) == 0
    (text,) = [line.split("  (")[0] for line in capsys.readouterr().out.splitlines()]
    assert meets_stress(text, "10101"), text
    assert main(["lines", "--model", str(served_checkpoint), "--prompt", "O", "--stress", "1x1"]) == 1
    assert "--stress" in capsys.readouterr().err
    assert main(["predict", "--model", str(served_checkpoint), "--prompt", "O", "--rhymes-with", "orange"]) == 1
    assert "orange" in capsys.readouterr().err


def test_analyze_command_with_a_model_matches_the_service(served_checkpoint, client, capsys, tmp_path):
    import json

    from lyricist.model.cli import main

    lyrics = tmp_path / "twinkle.txt"
    lyrics.write_text(TWINKLE, encoding="utf-8")
    assert main(["analyze", str(lyrics), "--json", "--model", str(served_checkpoint)]) == 0
    printed = json.loads(capsys.readouterr().out)
    served = client.post("/v1/analyze", json={"text": TWINKLE}).json()
    assert printed["model"] == served["model"] == "tiny-lstm"
    for mine, theirs in zip(printed["stanzas"][0]["lines"], served["stanzas"][0]["lines"]):
        assert mine == {**theirs, "nats_per_char": pytest.approx(theirs["nats_per_char"], rel=1e-9)}


# -- the shipped songs model ---------------------------------------------------------------------------

@pytest.mark.skipif(not (ROOT / "checkpoints" / "songs-lstm").exists(), reason="the shipped songs model is absent")
def test_songs_model_lines_and_predict(cmudict):
    settings = Settings(models=(str(ROOT / "checkpoints" / "songs-lstm"),))
    with TestClient(create_app(settings)) as songs:
        prompt = "We danced until the morning came,\nAnd whispered softly of your"
        body = songs.post("/v1/predict", json={"prompt": prompt, "rhymes_with": "came", "top_k": 3}).json()
        assert body["model"] == "songs-lstm" and body["distribution"][0]["text"] == "name"
        lines = songs.post("/v1/lines", json={"prompt": "I left my home at break of day,\n", "n": 2,
                                              "syllables": 8, "rhymes_with": "day", "seed": 7}).json()["lines"]
        for line in lines:
            assert 8 in syllable_sums(cmudict, line["text"]) and rhymes(cmudict, line["end_word"], "day")
            assert math.isfinite(line["nats_per_char"]) and line["nats_per_char"] < 3


@pytest.mark.skipif(not (ROOT / "checkpoints" / "songs-lstm").exists(), reason="the shipped songs model is absent")
def test_the_songs_model_reads_a_text_from_the_start_of_a_song(cmudict):
    """Lyrics without a title are read as the start of a song: an empty prompt offers words a song opens with,
    not the marks that go on a text; the context is named by /v1/models and counted in no usage figure."""
    settings = Settings(models=(str(ROOT / "checkpoints" / "songs-lstm"),))
    with TestClient(create_app(settings)) as songs:
        (card,) = songs.get("/v1/models").json()["data"]
        assert card["start"] and card["start"].strip()
        first = songs.post("/v1/predict", json={"prompt": "", "top_k": 10}).json()["distribution"]
        words = [entry["text"].strip() for entry in first]
        assert sum(word.lower() in cmudict for word in words) >= 7, words
        scored = songs.post("/v1/score", json={"text": "The night is cold"}).json()
        assert scored["tokens"] == 4, scored
