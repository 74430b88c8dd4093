"""The next-word search against brute-force enumeration, and the predict command."""

import functools
import math
import random
import subprocess
import sys

import pytest
import torch

from lyricist.model import load_checkpoint
from lyricist.model.prediction import predict
from lyricist.model.units import EOS_TEXT, NOT_TEXT, classify, count_units
from lyricist.model.vocabulary import Vocabulary, vocabulary_of
from lyricist.model.word_search import search_words

# A tiny vocabulary whose pieces cross word boundaries in every way: words split
# over pieces, a piece holding a word's end and a comma, spaces, a UTF-8
# character split over two byte pieces, and the end of the text.
PIECES = [b"", b"", b"", b" ", b"a", b"b", b"ab", b"b,", b",", b"\n", b" a", b"\xc3", b"\xa9"]
EOS = 2


def _markov_probs(last: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(1000 + last)
    logits = torch.randn(len(PIECES), generator=g, dtype=torch.float64) * 1.5
    logits[:2] = float("-inf")  # unk and bos never come
    logits[[3, 4, 5, 6, 10, 11, 12]] -= 1.5  # pieces that leave the unit open: keep enumeration short
    return torch.softmax(logits, dim=0)


MARKOV = [_markov_probs(last) for last in range(len(PIECES))]


def markov_probs(last: int) -> torch.Tensor:
    """A fixed distribution over the next piece that depends on the previous one."""
    return MARKOV[last]


MARKOV_LISTS = [p.tolist() for p in MARKOV]


def markov_step(states, pieces):
    return torch.stack([markov_probs(p) for p in pieces]), list(pieces)


@functools.cache
def spelling(data: bytes) -> list[int]:
    """The toy tokenizer: the best segmentation of `data` under fixed piece scores (Viterbi, as unigram)."""
    scores = {i: -1.0 - 0.37 * ((i * 7) % 5) for i in range(3, len(PIECES))}
    best = [(0.0, [])] + [(float("-inf"), [])] * len(data)
    for end in range(1, len(data) + 1):
        for piece, score in scores.items():
            size = len(PIECES[piece])
            if size <= end and data[end - size:end] == PIECES[piece] and best[end - size][0] + score > best[end][0]:
                best[end] = (best[end - size][0] + score, best[end - size][1] + [piece])
    return best[len(data)][1]


VOCABULARY = Vocabulary(PIECES, EOS, spelling)


@functools.cache
def brute_force(depth: int) -> tuple[dict[str, float], float]:
    """Every piece sequence up to `depth`, each settled the slow, obvious way: a sequence counts for the
    unit its text begins with when its pieces, up to the one where that unit's text ends, are the
    tokenizer's own spelling of their text. Bytes that are no text (U+FFFD) are no unit."""
    totals: dict[str, float] = {}
    unsettled = 0.0
    frontier = [((), 1.0, 1)]
    for _ in range(depth):
        nxt = []
        for path, prob, last in frontier:
            for piece, q in enumerate(MARKOV_LISTS[last]):
                if q == 0:
                    continue
                text_path = path if piece == EOS else path + (piece,)
                data = b"".join(PIECES[i] for i in text_path)
                unit, _ = classify(data, final=piece == EOS)
                if unit is None:
                    nxt.append((path + (piece,), prob * q, piece))
                    continue
                if unit == NOT_TEXT:
                    continue
                # the first prefix whose text, ended there, already gives the unit: its last piece holds the end
                end = next(m for m in range(len(text_path) + 1)
                           if classify(b"".join(PIECES[i] for i in text_path[:m]), final=True)[0] == unit)
                prefix = text_path[:end]
                if spelling(b"".join(PIECES[i] for i in prefix)) == list(prefix):
                    totals[unit] = totals.get(unit, 0) + prob * q
        frontier = nxt
        unsettled = sum(p for _, p, _ in frontier)
    return totals, unsettled


def test_classify_follows_the_definition_of_a_word():
    assert classify(b"  the") == (None, "the")
    assert classify(b"  the ") == ("the", "")
    assert classify(b" don't,") == ("don't", "")
    assert classify(b"\n") == ("\n", "")
    assert classify(b"  ") == (None, "")
    assert classify(b" caf\xc3") == (None, "caf")  # the unfinished character may still be a letter
    assert classify(b" caf\xc3\xa9!") == ("caf\u00e9", "")
    assert classify(b" caf", final=True) == ("caf", "") and classify(b" ", final=True) == (EOS_TEXT, "")
    assert classify(b" \xc3", final=True) == ("\ufffd", "")


@pytest.mark.parametrize("start_nodes", [64, 1])  # 1: every word beginning but the first waits in a bundle
def test_word_search_matches_brute_force_enumeration(start_nodes, monkeypatch):
    import lyricist.model.word_search

    monkeypatch.setattr(lyricist.model.word_search, "START_NODES", start_nodes)
    expected, unsettled = brute_force(depth=9)
    assert unsettled < 2e-7
    words, exact = search_words(markov_probs(1), 1, markov_step, VOCABULARY, top_k=5, tolerance=1e-6,
                                max_rounds=400)
    assert exact
    best = sorted(expected.items(), key=lambda kv: -kv[1])[:5]
    assert [w for w, _ in words] == [w for w, _ in best]
    for (_, got), (_, want) in zip(words, best):
        assert got == pytest.approx(want, abs=1e-6 + unsettled)


def test_word_search_with_a_small_budget_says_it_is_not_exact():
    words, exact = search_words(markov_probs(1), 1, markov_step, VOCABULARY, top_k=5, tolerance=1e-12,
                                max_rounds=1)
    assert not exact and len(words) > 0


def test_word_distribution_of_a_real_model_is_sorted_and_its_mass_at_most_one(tiny_checkpoint):
    ckpt = load_checkpoint(tiny_checkpoint)
    result = predict(ckpt.model, ckpt.tokenizer, "ROMEO:\nWhat say", top_k=10)
    probs = [p for _, p in result.distribution]
    assert len(probs) == 10 and probs == sorted(probs, reverse=True)
    assert 0 < result.coverage <= 1 + 1e-9
    assert all(" " not in text.strip("\n") or text == "\n" for text, _ in result.distribution)
    assert 0 < result.entropy <= math.log(ckpt.tokenizer.vocab_size) + 1e-9


def test_token_distribution_is_the_softmax_of_the_last_logits(tiny_checkpoint):
    ckpt = load_checkpoint(tiny_checkpoint)
    result = predict(ckpt.model, ckpt.tokenizer, "KING", top_k=5, unit="token", temperature=0.5)
    with torch.inference_mode():
        logits, _ = ckpt.model(torch.tensor([ckpt.tokenizer.encode("KING", add_bos=True)]))
    want = torch.softmax(logits[0, -1].double() / 0.5, -1).topk(5)
    assert [p for _, p in result.distribution] == pytest.approx(want.values.tolist())
    assert [t for t, _ in result.distribution] == [ckpt.tokenizer.decode([i]) for i in want.indices.tolist()]


def test_prediction_runs_without_dropout_and_leaves_the_mode_it_found(tokenizer):
    from .helpers import tiny_model

    model = tiny_model(tokenizer.vocab_size, dropout={"input": 0.5, "output": 0.5, "weight": 0.5}, seed=8)
    for unit in ("word", "token"):
        want = predict(model.eval(), tokenizer, "ROMEO:\nWhat", top_k=5, unit=unit)
        assert predict(model.train(), tokenizer, "ROMEO:\nWhat", top_k=5, unit=unit) == want and model.training


def test_no_lone_byte_piece_or_replacement_character_is_listed(tokenizer):
    """At a high temperature the byte pieces (a quarter of a small vocabulary) take much of the mass: as words they
    would add up to a top "\ufffd"; as tokens each would show as one. Their mass is left out of the listing."""
    from .helpers import tiny_model

    model = tiny_model(tokenizer.vocab_size, embedding_size=32, hidden_size=32, seed=3).eval()
    with torch.inference_mode():
        logits, _ = model(torch.tensor([[tokenizer.bos_id]]))
    byte_pieces = [i for i, text in enumerate(tokenizer.piece_texts) if text is None]
    assert float(torch.softmax(logits[0, -1].double() / 4, -1)[byte_pieces].sum()) > 0.05
    words = predict(model, tokenizer, "", top_k=100, temperature=4)
    tokens = predict(model, tokenizer, "", top_k=100, unit="token", temperature=4)
    for result in (words, tokens):
        assert len(result.distribution) == 100 and result.coverage < 1
        assert all(NOT_TEXT not in text for text, _ in result.distribution)
    assert all(text in tokenizer.piece_texts for text, _ in tokens.distribution)


def test_cli_predict_prints_the_distribution(tiny_checkpoint):
    result = subprocess.run([sys.executable, "-m", "lyricist.model.cli", "predict", "--model", str(tiny_checkpoint),
                             "--prompt", "ROMEO:", "--top-k", "3"], check=False, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 3 and all("%" in line for line in lines)


def test_units_are_counted_as_the_word_search_reads_them():
    # Don't | stop | , | ROMEO | ! | \n | x | _ | y | 3rd
    assert count_units("Don't stop, ROMEO!\n  x_y 3rd") == 10
    assert count_units("") == count_units("   \t ") == 0
    assert count_units("a\n\nb") == 4


def test_word_probabilities_of_the_shipped_model_equal_their_spelling_read_directly():
    """Each listed word's figure is what the model gives its own pieces, then a piece that ends it,
    summed over the leading spaces it may come with, read here by plain reads of the whole text (the model's
    continuous cache mixed in, as the prediction reads: docs/memory.md)."""
    from .helpers import ROOT

    ckpt = load_checkpoint(ROOT / "checkpoints" / "shakespeare-lstm")
    model, tok = ckpt.model, ckpt.tokenizer
    prompt = "ROMEO:\nBut soft, what light through yonder"
    result = predict(model, tok, prompt, top_k=8)
    assert result.exact and len(result.distribution) == 8
    ends_word = vocabulary_of(tok).ends_word
    # Words only: a punctuation unit is one character, which a longer piece may also begin ("--"), so its
    # direct reading is another sum.
    words = [(word, prob) for word, prob in result.distribution if word.isalpha()]
    assert len(words) >= 3
    for word, prob in words:
        direct = 0.0
        for lead in ("", " ", "  "):
            pieces = tok.encode(lead + word)
            with torch.inference_mode():
                logits, _ = model.read(torch.tensor(tok.encode(prompt, add_bos=True) + pieces), every_piece=True)
            probs = torch.softmax(logits[-len(pieces) - 1:].double(), -1)
            spelled = math.prod(float(probs[i, piece]) for i, piece in enumerate(pieces))
            direct += spelled * float(probs[-1][ends_word].sum())
        assert prob == pytest.approx(direct, abs=1e-3)


def test_after_a_typed_space_the_next_word_is_what_follows_that_space():
    """A prompt ending in a space, as a writer leaves it before the next word, is read without its last piece
    (a bare space, which the tokenizer uses only where the space cannot join what follows): each word's figure
    is its reading after the prompt with that space (or more) before it, given that the text goes on with a
    space. Tokens are listed without the space typed."""
    from .helpers import ROOT

    ckpt = load_checkpoint(ROOT / "checkpoints" / "shakespeare-lstm")
    model, tok = ckpt.model, ckpt.tokenizer
    prompt = "ROMEO:\nBut soft, what light through yonder"
    spaced = predict(model, tok, prompt + " ", top_k=8)
    assert spaced.exact and spaced.prompt_tokens == len(tok.encode(prompt + " ", add_bos=True))
    ids = tok.encode(prompt, add_bos=True)
    with torch.inference_mode():
        logits, _ = model.read(torch.tensor(ids))
    first = torch.softmax(logits[0].double(), -1)
    after_space = float(first[tok.pieces_beginning(" ")].sum())
    assert 0.2 < after_space < 0.99  # the prompt may also go on with punctuation: that is ruled out
    ends_word = vocabulary_of(tok).ends_word
    words = [(word, prob) for word, prob in spaced.distribution if word.isalpha()]
    assert len(words) >= 6
    for word, prob in words:
        direct = 0.0
        for lead in (" ", "  "):
            pieces = tok.encode(lead + word)
            with torch.inference_mode():
                logits, _ = model.read(torch.tensor(ids + pieces), every_piece=True)
            probs = torch.softmax(logits[-len(pieces) - 1:].double(), -1)
            spelled = math.prod(float(probs[i, piece]) for i, piece in enumerate(pieces))
            direct += spelled * float(probs[-1][ends_word].sum())
        assert prob == pytest.approx(direct / after_space, abs=1e-3)

    tokens = predict(model, tok, prompt + " ", top_k=5, unit="token")
    want = first[tok.pieces_beginning(" ")].topk(6)
    listed = [(tok.piece_texts[tok.pieces_beginning(" ")[i]], p / after_space)
              for p, i in zip(want.values.tolist(), want.indices.tolist())]
    listed = [(text[1:], p) for text, p in listed if text != " "][:5]
    assert [t for t, _ in tokens.distribution] == [t for t, _ in listed]
    assert [p for _, p in tokens.distribution] == pytest.approx([p for _, p in listed])
    assert not any(text.startswith(" ") for text, _ in tokens.distribution)


def test_only_a_trailing_piece_of_spaces_is_left_unread(tokenizer):
    for prompt in ("ROMEO:", "ROMEO:\n", "ROMEO:\t", ""):
        assert tokenizer.encode_prompt(prompt) == (tokenizer.encode(prompt, add_bos=True), "")
    ids, typed = tokenizer.encode_prompt("ROMEO: ")
    assert ids == tokenizer.encode("ROMEO:", add_bos=True) and typed == " "


def test_spellings_of_the_shipped_tokenizer_are_prefix_closed(shakespeare_text):
    """The search drops a sequence that is not the tokenizer's spelling of its own text; that is exact only
    if no longer text's spelling starts with it, which holds when every spelling's start spells its own text."""
    from .helpers import ROOT

    tok = load_checkpoint(ROOT / "checkpoints" / "shakespeare-lstm").tokenizer
    rng = random.Random(7)
    for _ in range(400):
        start = rng.randrange(len(shakespeare_text) - 80)
        ids = tok.encode(shakespeare_text[start:start + rng.randrange(1, 80)])
        for end in range(1, len(ids)):
            assert tok.encode(tok.decode(ids[:end])) == ids[:end]
