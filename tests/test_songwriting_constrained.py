"""The constrained next-word distribution: exact, and the same P(word) as /v1/predict."""

import re

import pytest
import torch

from lyricist.songwriting import constrained
from lyricist.songwriting.constrained import constrained_next_words, constrained_steps, surface_forms
from lyricist.model.prediction import next_piece_probs, predict
from lyricist.model.units import LINE_BREAKS, is_word_char

from .helpers import tiny_model

WORDS = ["night", "light", "the", "thee", "and", "love", "lovely", "o", "I", "Night", "king", "kingdom"]


def peaked_model(tokenizer, seed: int = 5, bytes_bias: float = -1e4, spaces_bias: float = -1e4, peak: float = 6.0):
    """A tiny random model whose next-piece distributions favour a few word pieces, so word probabilities are
    large enough for the word search's tolerance to mean something. Byte pieces and whitespace-only pieces
    get `bytes_bias` / `spaces_bias` (-1e4: probability 0 in float64)."""
    model = tiny_model(tokenizer.vocab_size, embedding_size=24, hidden_size=32, seed=seed)
    boosted = set()
    for word in ["night", "light", "the", "and", "love", "o", "king", "I"]:
        for text in (word, " " + word):
            boosted.update(tokenizer.encode(text))
    with torch.no_grad():
        bias = model.decoder.bias
        for i, data in enumerate(tokenizer.piece_bytes):
            if i in boosted:
                bias[i] = peak
            text = data.decode("utf-8", "replace")
            if len(data) == 1 and data[0] >= 0x80 or text == "\ufffd":
                bias[i] = bytes_bias
            elif data and text.isspace() and not any(c in LINE_BREAKS for c in text):
                bias[i] = spaces_bias
    return model.eval()


@torch.inference_mode()
def brute_force(model, tokenizer, prompt: str, word: str) -> float:
    """P(word) straight from the definition, one whole sequence per lead, when the model never writes
    whitespace-only or byte pieces: the leads are "" and " ", each spelled one way."""
    ids = tokenizer.encode(prompt, add_bos=True)
    total = 0.0
    for lead in ("", " "):
        path = tokenizer.encode(lead + word)
        if tokenizer.piece_bytes[path[0]].decode().isspace():
            continue  # the space is its own piece: a whitespace-only piece, probability 0 here
        logits, _ = model(torch.tensor([ids + path]))
        probs = next_piece_probs(logits[0, len(ids) - 1:], 1.0)
        p = float(torch.prod(probs[torch.arange(len(path)), torch.tensor(path)]))
        ends = [i == tokenizer.eos_id or (bool(d) and not is_word_char(d.decode("utf-8", "replace")[0]))
                for i, d in enumerate(tokenizer.piece_bytes)]
        total += p * float(probs[len(path)][torch.tensor(ends)].sum())
    return total


@pytest.mark.parametrize("prompt", ["ROMEO:\nBut soft, what light", "JULIET:\n", "the", ""])
def test_equals_brute_force_and_predict(tokenizer, prompt):
    model = peaked_model(tokenizer)
    result = constrained_next_words(model, tokenizer, prompt, WORDS, tolerance=0.0, max_rows=100_000)
    assert result.unresolved == pytest.approx(0.0, abs=1e-12)
    for word in WORDS:
        assert result.probs.get(word, 0.0) == pytest.approx(brute_force(model, tokenizer, prompt, word),
                                                            rel=1e-5, abs=1e-12)  # float32 rows, batched differently
    assert result.constraint_mass == pytest.approx(sum(result.probs.values()), rel=1e-12)
    assert sum(p for _, p in result.distribution) == pytest.approx(1.0)
    # The project's own word search lists the same figures (to its tolerance, 1e-3).
    listed = dict(predict(model, tokenizer, prompt, top_k=100).distribution)
    compared = 0
    for word in WORDS:
        if word in listed:
            assert result.probs[word] == pytest.approx(listed[word], abs=1.1e-3)
            compared += 1
    assert compared >= 3


def test_a_word_set_searched_again_gives_the_same_figures_from_its_kept_levels(tokenizer, monkeypatch):
    # The first search of a word set lays out its paths below the whitespace nodes over several steps and keeps
    # them (constrained._Tables.level); the next searches of the set, from any prompt, read them as they are.
    monkeypatch.setattr(constrained, "LAY_OUT_PATHS", 4)
    model = peaked_model(tokenizer)
    words = [f"{w}{n}" for w in WORDS for n in ("", "s", "ed")]
    constrained.tables(tokenizer)._levels.clear()
    assert 0 in list(constrained_steps(model, tokenizer, "the", words, tolerance=0.0, max_rows=100_000))
    for prompt in ("the", "JULIET:\n"):
        kept = constrained_next_words(model, tokenizer, prompt, words, tolerance=0.0, max_rows=100_000)
        constrained.tables(tokenizer)._levels.clear()
        fresh = constrained_next_words(model, tokenizer, prompt, words, tolerance=0.0, max_rows=100_000)
        assert kept.probs == fresh.probs and kept.rows == fresh.rows and kept.probs


@pytest.mark.parametrize("prompt", ["KING:\nO my", "KING:\nO my "])
def test_matches_predict_with_spaces_and_bytes(tokenizer, prompt):
    """With whitespace-only and byte pieces possible (leads like "  night", characters over byte pieces after
    a word), the trie still gives /v1/predict's figures; after a typed space too (both read what follows it)."""
    model = peaked_model(tokenizer, seed=9, bytes_bias=-2.0, spaces_bias=0.0, peak=9.0)
    prediction = predict(model, tokenizer, prompt, top_k=8)
    assert prediction.exact
    listed = dict(prediction.distribution)
    words = [w for w in listed if w[0].isalnum()][:12]
    result = constrained_next_words(model, tokenizer, prompt, words, tolerance=0.0, floor=1e-9, max_rows=50_000)
    assert result.unresolved < 1e-4
    for word in words:
        assert result.probs[word] == pytest.approx(listed[word], abs=1.1e-3)
        assert result.probs[word] >= listed[word] - 1e-9  # the search's figures are lower bounds


def test_renormalised_distribution_and_top_k(tokenizer):
    model = peaked_model(tokenizer)
    full = constrained_next_words(model, tokenizer, "the", WORDS, tolerance=0.0)
    top = constrained_next_words(model, tokenizer, "the", WORDS, top_k=3, tolerance=0.0)
    assert len(top.distribution) == 3
    assert [w for w, _ in top.distribution] == [w for w, _ in full.distribution[:3]]
    for word, p in full.distribution:
        assert p == pytest.approx(full.probs[word] / full.constraint_mass)


def test_temperature_applies_to_every_piece(tokenizer):
    model = peaked_model(tokenizer)
    hot = constrained_next_words(model, tokenizer, "the", WORDS, temperature=2.0, tolerance=0.0)
    listed = dict(predict(model, tokenizer, "the", top_k=100, temperature=2.0).distribution)
    for word in WORDS:
        if listed.get(word, 0) > 0.01:
            assert hot.probs[word] == pytest.approx(listed[word], abs=1.1e-3)


def test_tolerance_floor_and_budget_bound_what_is_missing(tokenizer):
    model = peaked_model(tokenizer, bytes_bias=-2.0, spaces_bias=0.0)
    exact = constrained_next_words(model, tokenizer, "the", WORDS, tolerance=0.0, floor=1e-10, max_rows=100_000)
    for tolerance, floor, rows in ((1e-2, 0.0, 100_000), (0.0, 1e-3, 100_000), (0.0, 0.0, 5), (3e-5, 0.0, 2048)):
        rough = constrained_next_words(model, tokenizer, "the", WORDS, tolerance=tolerance, floor=floor,
                                       max_rows=rows)
        assert rough.rows <= min(rows, exact.rows)
        assert rough.constraint_mass <= exact.constraint_mass + 1e-12
        assert exact.constraint_mass <= rough.constraint_mass + rough.unresolved + 1e-12
        assert rough.exact == (rough.unresolved <= 1e-2 * rough.constraint_mass)


def test_a_row_budget_goes_to_the_likeliest_pieces_at_any_depth(tokenizer, shakespeare_text, monkeypatch):
    """Every word of the corpus: the first pieces alone are more than the budget, and a likely word spelled in
    two pieces (" l" "ight") is likelier than most of them. The search steps its likeliest nodes first,
    whatever their depth, a few a call, so a budget of a twentieth of the whole search finds the same top words."""
    monkeypatch.setattr(constrained, "CHUNK_ROWS", 16)
    model = peaked_model(tokenizer)
    words = sorted(set(re.findall(r"[a-z]+", shakespeare_text)))
    exact = constrained_next_words(model, tokenizer, "the", words, tolerance=1e-6, max_rows=100_000)
    rough = constrained_next_words(model, tokenizer, "the", words, tolerance=1e-6, max_rows=64)
    assert exact.rows > 20 * rough.rows and rough.rows == 64 and not rough.exact
    assert [w for w, _ in rough.distribution[:8]] == [w for w, _ in exact.distribution[:8]]
    assert any(len(tokenizer.encode(" " + w)) > 1 for w, _ in exact.distribution[:8])
    assert exact.constraint_mass <= rough.constraint_mass + rough.unresolved + 1e-12


def test_words_must_be_word_units(tokenizer):
    model = peaked_model(tokenizer)
    for bad in ["", "two words", "night,"]:
        with pytest.raises(ValueError):
            constrained_next_words(model, tokenizer, "the", [bad])


def test_surface_forms():
    assert surface_forms(["night", "I", "o'er"]) == ["night", "Night", "i", "I", "o'er", "O'er"]


def test_pieces_that_end_a_word_inside_them(shakespeare_text):
    """A vocabulary with pieces of word characters then others ("e,", "t."): a word may end inside one, and
    /v1/predict counts those paths where they are the tokenizer's spelling; so does the trie."""
    import sentencepiece as spm

    from lyricist.model import Tokenizer
    from lyricist.model.tokenizer import TRAINER_SETTINGS, _BytesSink, _training_chunks

    settings = dict(TRAINER_SETTINGS, user_defined_symbols=[*TRAINER_SETTINGS["user_defined_symbols"], "e,", "t."])
    sink = _BytesSink()
    spm.SentencePieceTrainer.train(sentence_iterator=_training_chunks(shakespeare_text[:300_000]), model_writer=sink,
                                   vocab_size=800, model_type="unigram", minloglevel=2, num_threads=1, **settings)
    tokenizer = Tokenizer(sink.data)
    assert tokenizer.encode(" the,") != tokenizer.encode(" the") + tokenizer.encode(",")
    model = peaked_model(tokenizer, seed=4, bytes_bias=-1e4, spaces_bias=-1e4, peak=7.0)
    with torch.no_grad():
        for piece in ("e,", "t."):
            model.decoder.bias[tokenizer.encode(piece)[0]] = 7.0
    prompt = "KING:\nO my"
    prediction = predict(model, tokenizer, prompt, top_k=8)
    assert prediction.exact
    listed = dict(prediction.distribution)
    words = [w for w in listed if w[0].isalnum()]
    assert any(w.endswith(("e", "t")) for w in words)
    result = constrained_next_words(model, tokenizer, prompt, words, tolerance=0.0, max_rows=50_000)
    for word in words:
        assert result.probs[word] == pytest.approx(listed[word], abs=1.1e-3)
