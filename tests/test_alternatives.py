"""/v1/alternatives over the real app, and `lyricist alternatives`: other words for a part of a line, read with
both sides. The answers are checked against what they claim: each `logprob` is the text's log probability with
the candidate in place as /v1/score gives it, the `prob`s are the softmax of those over what is shown and the
original (a line end that keeps the stanza's rhyme weighed e^4 more), the rank counts the better candidates, and
every constraint holds by this suite's own reading of CMUdict (tests/cmudict_reading.py). Most tests use the tiny random-weight checkpoint (its words are nonsense, but
every rule must hold whatever the model likes); one uses the shipped songs model."""

import math

import pytest
import torch
from fastapi.testclient import TestClient

from lyricist.app.server import create_app
from lyricist.app.settings import Settings

from .cmudict_reading import WORD, meets_stress, rhymes, syllable_sums
from .helpers import ROOT

STANZA = "The wind blew cold across the moor,\nMy true love waited by the door"
COLD = (STANZA.index("cold"), STANZA.index("cold") + len("cold"))


@pytest.fixture(scope="module")
def client(served_checkpoint):
    with TestClient(create_app(Settings(models=(str(served_checkpoint),), max_prompt_chars=2000))) as client:
        yield client


def alternatives(client, **body) -> dict:
    response = client.post("/v1/alternatives", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def in_place(text: str, start: int, end: int, words: str) -> str:
    """The text with `words` for text[start:end], a space where they would touch a word or follow a mark that
    closes or precede one that opens (docs/api.md)."""
    left, right = text[:start], text[end:]
    if words and left and (left[-1].isalnum() or left[-1] in "'\u2019,.;:!?)]}\u201d\u2026"):
        words = " " + words
    if words and right and (right[0].isalnum() or right[0] in "'\u2019([{\u201c"):
        words += " "
    return left + words + right


def score_logprob(client, text: str) -> float:
    response = client.post("/v1/score", json={"text": text})
    assert response.status_code == 200, response.text
    return -response.json()["nll"]


# stanzas before the part's: the lines before its line are read in two parts (docs/songwriting.md)
LONG = "Over the hills and far away,\nThe morning light came in;\n\n" * 3 + STANZA
# the part late in a long line: the text before the last space ahead of it is read once (docs/tokenizer.md);
# and after 900 characters with no space, where no such place is and the versions share all but their ends
LONG_LINE = "la " * 300 + STANZA
NO_SPACE = "0" * 900 + "," + STANZA[STANZA.index("cold"):]


@pytest.mark.parametrize("text", [STANZA, LONG, LONG_LINE, NO_SPACE])
def test_each_logprob_is_the_whole_stanza_scored_with_the_candidate_in_place(client, text):
    cold = (text.index("cold"), text.index("cold") + len("cold"))
    body = alternatives(client, text=text, start=cold[0], end=cold[1], n=6)
    assert body["model"] == "tiny-lstm" and body["original"]["text"] == "cold"
    shown = body["alternatives"]
    assert 1 <= len(shown) <= 6 and len({a["text"].lower() for a in shown}) == len(shown)  # case variants merged
    for candidate in [*shown, body["original"]]:
        expected = score_logprob(client, in_place(text, *cold, candidate["text"]))
        assert candidate["logprob"] == pytest.approx(expected, abs=1e-3), candidate
    logprobs = [a["logprob"] for a in shown]
    assert logprobs == sorted(logprobs, reverse=True)


def test_probs_are_shares_of_the_shown_and_the_original_and_the_rank_counts_the_better(client):
    for n in (1, 4, 32):
        body = alternatives(client, text=STANZA, start=COLD[0], end=COLD[1], n=n)
        original, shown = body["original"], body["alternatives"]
        weighed = shown if any(a["text"] == original["text"] for a in shown) else [*shown, original]
        assert sum(a["prob"] for a in weighed) == pytest.approx(1.0, abs=1e-6)
        total = sum(math.exp(a["logprob"] - original["logprob"]) for a in weighed)
        for candidate in weighed:
            assert candidate["prob"] == pytest.approx(math.exp(candidate["logprob"] - original["logprob"]) / total,
                                                      rel=1e-6)
        better = [a for a in shown if a["logprob"] > original["logprob"]]
        if original["rank"] <= len(shown):
            assert shown[original["rank"] - 1]["text"] == original["text"] and len(better) == original["rank"] - 1
        else:
            assert len(better) == len(shown) and original["text"] not in [a["text"] for a in shown]


@pytest.mark.parametrize("asked", [{"syllables": 2}, {"stress": "01"}, {"rhymes_with": "day"},
                                   {"syllables": 1, "rhymes_with": "moor"}])
def test_the_original_is_listed_only_where_it_meets_what_is_asked(client, asked):
    """Every alternative meets the request, the original too: "cold" (one syllable, no rhyme for "day" or
    "moor") is not listed when it does not, and still has its share and its rank among the candidates."""
    body = alternatives(client, text=STANZA, start=COLD[0], end=COLD[1], n=32, **asked)
    original, shown = body["original"], body["alternatives"]
    assert original["text"] == "cold" and "cold" not in [a["text"].lower() for a in shown] and shown
    for candidate in shown:
        if "syllables" in asked:
            assert asked["syllables"] in syllable_sums(candidate["text"]), candidate
        if "stress" in asked:
            assert meets_stress(candidate["text"], asked["stress"]), candidate
        if "rhymes_with" in asked:
            assert rhymes(WORD.findall(candidate["text"])[-1], asked["rhymes_with"]), candidate
    assert sum(a["prob"] for a in [*shown, original]) == pytest.approx(1.0, abs=1e-6)
    assert original["rank"] - 1 == len([a for a in shown if a["logprob"] > original["logprob"]])
    meeting = alternatives(client, text=STANZA, start=COLD[0], end=COLD[1], n=32, syllables=1, stress="1")
    assert "cold" in [a["text"] for a in meeting["alternatives"]]  # one syllable, stressed: it meets both


RHYME_WEIGHT = 4.0  # docs/api.md: a line end that rhymes with another line of its stanza


def weight(candidate: dict) -> float:
    return candidate["logprob"] + (RHYME_WEIGHT if candidate["rhymes_with"] else 0.0)


def test_at_a_line_end_the_stanza_rhyme_is_named_and_weighed(client):
    """"mill" ends the stanza's second line and "hill" its first: a candidate named as rhyming with "hill" does
    by the dictionary, one not named does not, and the ranking and the shares are the model's log probabilities
    with e^4 for the rhyme. Mid-line, or when the request names the rhyme itself, nothing is named."""
    text = "The wind blew cold across the hill,\nMy true love waited by the mill"
    mill = (text.index("mill"), text.index("mill") + 4)
    body = alternatives(client, text=text, start=mill[0], end=mill[1], n=32, syllables=1)
    original, shown = body["original"], body["alternatives"]
    assert original["rhymes_with"] == "hill"
    named = [a for a in shown if a["rhymes_with"]]
    assert named and len(named) < len(shown), shown
    for candidate in shown:
        assert rhymes(candidate["text"], "hill") == (candidate["rhymes_with"] == "hill"), candidate
    weights = [weight(a) for a in shown]
    assert weights == sorted(weights, reverse=True)
    weighed = shown if any(a["text"] == original["text"] for a in shown) else [*shown, original]
    total = sum(math.exp(weight(a) - weight(original)) for a in weighed)
    for candidate in weighed:
        assert candidate["prob"] == pytest.approx(math.exp(weight(candidate) - weight(original)) / total, rel=1e-6)
    for candidate in [*shown, original]:
        expected = score_logprob(client, in_place(text, *mill, candidate["text"]))
        assert candidate["logprob"] == pytest.approx(expected, abs=1e-3), candidate
    mid_line = alternatives(client, text=text, start=text.index("cold"), end=text.index("cold") + 4, n=32)
    asked = alternatives(client, text=text, start=mill[0], end=mill[1], n=32, rhymes_with="still")
    assert not any(a["rhymes_with"] for body in (mid_line, asked) for a in [*body["alternatives"], body["original"]])


def test_no_candidate_echoes_the_word_beside_the_part_or_repeats_one_back_to_back(client):
    second_love = "O my love, my love is gone".rindex("love")
    for text, (start, end) in ((STANZA, COLD), ("O my love, my love is gone", (second_love, second_love + 4))):
        before, after = WORD.findall(text[:start])[-1].lower(), WORD.findall(text[end:])[0].lower()
        for max_words in (1, 2, 4):
            for candidate in alternatives(client, text=text, start=start, end=end, n=32,
                                          max_words=max_words)["alternatives"]:
                words = WORD.findall(candidate["text"].lower())
                assert words[0] != before and words[-1] != after, candidate
                assert all(word != following for word, following in zip(words, words[1:])), candidate


def test_every_candidate_meets_the_constraints_by_the_dictionary_itself(client):
    cases = [({"syllables": 2}, lambda t: 2 in syllable_sums(t)),
             ({"stress": "10"}, lambda t: meets_stress(t, "10")),
             ({"stress": "01", "max_words": 2}, lambda t: meets_stress(t, "01")),
             ({"rhymes_with": "moor", "syllables": 1}, lambda t: rhymes(WORD.findall(t)[-1], "moor")
              and 1 in syllable_sums(t)),
             ({"max_words": 1}, lambda t: len(WORD.findall(t)) == 1)]
    for constraints, holds in cases:
        body = alternatives(client, text=STANZA, start=COLD[0], end=COLD[1], n=8, **constraints)
        assert body["alternatives"], constraints
        for candidate in body["alternatives"]:
            if candidate["text"] != "cold":
                assert holds(candidate["text"]), (constraints, candidate)
                assert 1 <= len(WORD.findall(candidate["text"])) <= constraints.get("max_words", 1)
            if "stress" in constraints:
                assert candidate["stress"] is not None and len(candidate["stress"]) == len(constraints["stress"])


def test_an_empty_part_inserts_and_a_phrase_is_replaced(client):
    at = STANZA.index("love")  # before "love": "My true [...] love"
    inserted = alternatives(client, text=STANZA, start=at, end=at, n=5, syllables=1)
    assert inserted["original"]["text"] == "" and inserted["original"]["syllables"] == 0
    assert all(a["text"] for a in inserted["alternatives"])
    for candidate in inserted["alternatives"][:2]:
        expected = score_logprob(client, in_place(STANZA, at, at, candidate["text"]))
        assert candidate["logprob"] == pytest.approx(expected, abs=1e-3)
    empty = alternatives(client, text="", start=0, end=0, n=3)  # a first word for an empty page
    assert empty["original"] == {**empty["original"], "text": "", "logprob": 0.0} and len(empty["alternatives"]) == 3
    phrase = (STANZA.index("across the moor"), STANZA.index("across the moor") + len("across the moor"))
    body = alternatives(client, text=STANZA, start=phrase[0], end=phrase[1], n=5)
    assert all(1 <= len(WORD.findall(a["text"])) <= 3 for a in body["alternatives"])  # max_words: the part's 3


@pytest.mark.parametrize("before, after, typed", [
    ("Saturday,", ", Monday,\nTuesday", "Saturday, {}, Monday,\nTuesday"),
    ("(the moor)", "and the sea", "(the moor) {} and the sea"),
    ("my love", "“true”", "my love {} “true”"),
])
def test_an_insert_beside_a_mark_stands_a_space_apart_as_it_would_be_typed(client, before, after, typed):
    """A word taken out after a comma ("Saturday, Sunday, Monday" less "Sunday" and the space before it) is put
    back after a space, as a songwriter would type it, not glued to the mark; and so read and scored."""
    text = before + after
    body = alternatives(client, text=text, start=len(before), end=len(before), n=4, syllables=1)
    assert body["alternatives"]
    for candidate in body["alternatives"][:2]:
        placed = typed.format(candidate["text"])
        assert in_place(text, len(before), len(before), candidate["text"]) == placed
        assert candidate["logprob"] == pytest.approx(score_logprob(client, placed), abs=1e-3)


def test_a_text_typed_on_windows_is_read_as_its_lf_copy_at_its_own_offsets(client):
    typed = STANZA.replace("\n", "\r\n")
    cold = typed.index("cold")
    assert alternatives(client, text=typed, start=cold, end=cold + 4, n=5) == alternatives(
        client, text=STANZA, start=COLD[0], end=COLD[1], n=5)
    line_end = typed.index("\r\n")  # an insert at the end of the first line
    assert alternatives(client, text=typed, start=line_end, end=line_end, n=5, syllables=1) == alternatives(
        client, text=STANZA, start=STANZA.index("\n"), end=STANZA.index("\n"), n=5, syllables=1)


def test_only_the_stanza_of_the_part_is_read_after_it(client):
    """The lines after a stanza break change nothing (the text past the part's stanza is not scored)."""
    one = alternatives(client, text=STANZA, start=COLD[0], end=COLD[1], n=5)
    more = alternatives(client, text=STANZA + "\n\nAnother verse begins\nAnd ends", start=COLD[0], end=COLD[1], n=5)
    assert one == more
    scored = client.post("/v1/score", json={"text": STANZA}).json()
    assert one["usage"]["prompt_tokens"] == scored["tokens"] + 1  # the stanza's pieces and the start marker


BAD = [({"start": 999}, "start", "0 to"), ({"start": -1}, "start", "greater than or equal to 0"),
       ({"end": 999}, "end", "0 to"), ({"start": 14, "end": 10}, "end", "before start"),
       ({"start": 14, "end": 40}, "end", "line break"), ({"start": 15, "end": 18}, "start", "inside the word"),
       ({"end": 17}, "end", "inside the word"), ({"n": 0}, "n", "greater than or equal to 1"),
       ({"n": 33}, "n", "32"), ({"max_words": 5}, "max_words", "4"),
       ({"stress": "101", "syllables": 2}, "stress", "syllables"), ({"stress": "1x"}, "stress", "digits"),
       ({"syllables": 0}, "syllables", "1"), ({"rhyme": "slant"}, "rhyme", "perfect"),
       ({"rhymes_with": "12"}, "rhymes_with", None), ({"maxwords": 2}, "maxwords", "max_words")]


@pytest.mark.parametrize("change, field, words", BAD)
def test_bad_bodies_name_their_field(client, change, field, words):
    body = {"text": STANZA, "start": COLD[0], "end": COLD[1], **change}
    response = client.post("/v1/alternatives", json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == field and error["type"] == "invalid_request_error", error
    if words:
        assert words in error["message"], error


def test_unmeetable_constraints_are_a_422_naming_the_constraint(client):
    response = client.post("/v1/alternatives", json={"text": STANZA, "start": COLD[0], "end": COLD[1],
                                                     "rhymes_with": "orange", "max_words": 1})
    assert response.status_code == 422, response.text
    assert response.json()["error"]["param"] == "rhymes_with"


def test_the_texts_own_words_are_candidates_though_the_model_never_read_them(served_checkpoint):
    """A songwriter's own words (a name, a word of today) come back even where the model read none of them in
    training: given no training words at all, the candidates are the text's words that fit, and nothing else."""
    from lyricist.model import load_checkpoint
    from lyricist.songwriting import tasks
    from lyricist.songwriting.alternatives import generate_alternatives
    from lyricist.songwriting.lines import ConstraintError
    from lyricist.songwriting.phonology import Phonology

    checkpoint = load_checkpoint(served_checkpoint)
    model, tokenizer = checkpoint.model, checkpoint.tokenizer
    lexicon, phonology = tasks.prepare(tokenizer), Phonology.load()
    text = "We danced beside the radio\nUntil the morning light\n"
    start = text.index("morning")
    part = (text, start, start + len("morning"), frozenset())
    three = generate_alternatives(model, tokenizer, lexicon, phonology, *part, n=32, syllables=3)
    # the original is listed where it ranks in; the one other word of the text with three syllables
    assert [a.text.lower() for a in three.alternatives if a is not three.original] == ["radio"]
    one = generate_alternatives(model, tokenizer, lexicon, phonology, *part, n=32, syllables=1)
    words = {w.lower() for w in WORD.findall(text)}
    shown = {a.text.lower() for a in one.alternatives if a is not one.original}
    assert shown and shown <= words - {"the"}, shown  # "the" would echo the word before the part
    with pytest.raises(ConstraintError, match="the text uses has 5 syllables"):
        generate_alternatives(model, tokenizer, lexicon, phonology, *part, syllables=5)


def test_a_text_typed_with_curly_apostrophes_gets_its_candidates_so_and_the_same_figures(served_checkpoint):
    """Pasted lyrics write "won’t"; the dictionary and the training words write "won't". The models read both alike
    (docs/tokenizer.md), so the candidates are the same, with the same figures, in the text's own typography."""
    from lyricist.model import load_checkpoint
    from lyricist.songwriting import tasks
    from lyricist.songwriting.alternatives import generate_alternatives
    from lyricist.songwriting.phonology import Phonology

    checkpoint = load_checkpoint(served_checkpoint)
    lexicon, phonology = tasks.prepare(checkpoint.tokenizer), Phonology.load()
    words = frozenset({"won't", "don't", "shan't", "ain't"})
    plain = "I don't know why I won't go,\nThe night is long and I can't stay"
    curly = plain.replace("'", "\u2019")
    start = plain.index("won't")
    found = [generate_alternatives(checkpoint.model, checkpoint.tokenizer, lexicon, phonology, text, start,
                                   start + len("won't"), words, n=32, syllables=1) for text in (plain, curly)]
    assert found[1].original.text == "won\u2019t" and found[1].rank == found[0].rank
    shown = [[(a.text, a.logprob) for a in result.alternatives] for result in found]
    assert "can't" in {text for text, _ in shown[0]}  # the text's own word, found though typed "can’t"
    assert shown[1] == [(text.replace("'", "\u2019"), logprob) for text, logprob in shown[0]]


def test_a_part_typed_with_a_curly_apostrophe_is_not_offered_back_with_a_straight_one():
    """In a text that writes its apostrophes ', a part typed "won’t" is read as "won't": the songs model proposes
    "won't", which is the part itself, not another word."""
    from lyricist.model import load_checkpoint
    from lyricist.songwriting import tasks
    from lyricist.songwriting.alternatives import generate_alternatives
    from lyricist.songwriting.phonology import Phonology

    checkpoint = load_checkpoint(ROOT / "checkpoints" / "songs-lstm")
    lexicon, phonology = tasks.prepare(checkpoint.tokenizer), Phonology.load()
    text = "I don't know why I won\u2019t go,\nThe night is long and I can't stay"
    start = text.index("won\u2019t")
    found = generate_alternatives(checkpoint.model, checkpoint.tokenizer, lexicon, phonology, text, start, start + 5,
                                  frozenset({"won't", "don't", "shan't", "ain't"}), n=32, syllables=1)
    shown = [a.text for a in found.alternatives]
    assert "don't" in shown and "won't" not in shown and found.original.text == "won\u2019t"


def test_the_proposals_pick_up_where_the_lines_before_were_read(served_checkpoint):
    """The lines before the part's are read once, in two parts: the figure of one reading, and the proposals
    find the state kept between the parts in the prompt cache, proposing what a reading from the start would."""
    from lyricist.model import load_checkpoint
    from lyricist.model.prompt_cache import PromptCache
    from lyricist.model.scoring import read_prefix
    from lyricist.model.steps import run_to_end
    from lyricist.songwriting import tasks
    from lyricist.songwriting.alternatives import _PhraseRule, _propose, _read_before

    checkpoint = load_checkpoint(served_checkpoint)
    model, tokenizer = checkpoint.model, checkpoint.tokenizer
    cold = LONG.index("cold")
    before = tokenizer.encode(LONG[: LONG.rfind("\n", 0, cold) + 1], add_bos=True)
    assert len(before) > 32
    prompts = PromptCache(model)
    in_parts, whole = run_to_end(_read_before(model, before, prompts)), run_to_end(read_prefix(model, before))
    assert in_parts[0] == pytest.approx(whole[0], abs=1e-6) and torch.equal(in_parts[1], whole[1])
    rule = _PhraseRule(tasks.prepare(tokenizer), tasks.end_words(checkpoint), 1, None, None, "perfect")
    picked_up = run_to_end(_propose(model, tokenizer, rule, LONG[:cold], 1, prompts))
    assert prompts.hits == 1
    from_start = run_to_end(_propose(model, tokenizer, rule, LONG[:cold], 1, PromptCache(model)))
    assert picked_up[0] and picked_up[0] == from_start[0]


@pytest.mark.parametrize("text", ["0" * 900, "0" * 900 + " la la"])
def test_an_insert_after_a_line_with_no_space_reads_that_line_once(client, served_checkpoint, text):
    """No space before the part to cut at, but the place itself: every candidate begins with a space there, and
    the text goes on with one (or ends). The line is read once, and the proposals find its state kept."""
    from lyricist.model import load_checkpoint
    from lyricist.model.prompt_cache import PromptCache
    from lyricist.songwriting import tasks
    from lyricist.songwriting.alternatives import generate_alternatives
    from lyricist.songwriting.phonology import Phonology

    body = alternatives(client, text=text, start=900, end=900, n=4)
    assert body["alternatives"]
    for candidate in [*body["alternatives"], body["original"]]:
        expected = score_logprob(client, in_place(text, 900, 900, candidate["text"]))
        assert candidate["logprob"] == pytest.approx(expected, abs=1e-3), candidate
    checkpoint = load_checkpoint(served_checkpoint)
    prompts = PromptCache(checkpoint.model)
    generate_alternatives(checkpoint.model, checkpoint.tokenizer, tasks.prepare(checkpoint.tokenizer), Phonology.load(),
                          text, 900, 900, tasks.end_words(checkpoint), n=4, prompts=prompts)
    assert prompts.hits == 1


def test_the_alternatives_command(served_checkpoint, capsys):
    import json

    from lyricist.model.cli import main

    assert main(["alternatives", "--model", str(served_checkpoint), "--text", STANZA, "--part", "cold",
                 "--syllables", "1", "-n", "3", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["original"]["text"] == "cold" and 1 <= len(printed["alternatives"]) <= 3
    assert all(1 in syllable_sums(a["text"]) for a in printed["alternatives"])
    for asked in ([], ["--syllables", "2"]):
        assert main(["alternatives", "--model", str(served_checkpoint), "--text", STANZA, "--part", "cold", "-n", "2",
                     *asked]) == 0
        lines = capsys.readouterr().out.splitlines()
        listed = [line for line in lines if "(the original" not in line]
        assert len(listed) == 2 and sum(float(line.split("%")[0]) for line in lines) == pytest.approx(100, abs=0.05)
        if asked:  # "cold" has one syllable: not listed, its share and rank printed last
            assert "(the original, not listed: rank " in lines[-1] and lines[-1].split()[1] == "cold"
    assert main(["alternatives", "--model", str(served_checkpoint), "--text", STANZA, "--part", "warm"]) == 1
    assert "--part" in capsys.readouterr().err
    assert main(["alternatives", "--model", str(served_checkpoint), "--text", STANZA, "--start", "15"]) == 1
    assert "--start" in capsys.readouterr().err


@pytest.mark.skipif(not (ROOT / "checkpoints" / "songs-lstm").exists(), reason="the shipped songs model is absent")
def test_the_songs_model_finds_the_words_of_a_known_song():
    """Ben Jonson's "Drink to me only with thine eyes": "eyes" comes back among the ten, and no candidate
    echoes the word beside it ("with thine thine", which the cache alone would like); "wine", which ends the
    stanza, is named as keeping its rhyme with "mine" and comes back among the ten, after a rhyme of "mine"."""
    text = ("Drink to me only with thine eyes,\nAnd I will pledge with mine;\nOr leave a kiss but in the cup,\n"
            "And I'll not look for wine.\n")
    eyes, wine = text.index("eyes"), text.index("wine")
    with TestClient(create_app(Settings(models=(str(ROOT / "checkpoints" / "songs-lstm"),)))) as songs:
        first = alternatives(songs, text=text, start=eyes, end=eyes + 4, n=10)
        last = alternatives(songs, text=text, start=wine, end=wine + 4, n=10)
    assert first["original"]["rank"] <= 10, first
    assert "thine" not in [a["text"].lower() for a in first["alternatives"]]
    assert last["original"]["rhymes_with"] == "mine" and last["original"]["rank"] <= 10, last
    assert last["alternatives"][0]["rhymes_with"] == "mine" and rhymes(last["alternatives"][0]["text"], "mine")


@pytest.mark.skipif(not (ROOT / "checkpoints" / "songs-lstm").exists(), reason="the shipped songs model is absent")
def test_the_songs_model_puts_back_a_word_taken_out_after_a_comma_a_repeated_one_too():
    """A word taken out with the space before it, after a comma: "Sunday" goes back as "Saturday, Sunday", not
    glued to the comma; and a word a song repeats across a mark ("Hot, hot!", "Row, row") is a candidate, unlike
    an echo with only a space between ("with thine thine", the test above)."""
    cases = [("How many days has my baby to play?\nSaturday, Sunday, Monday,\nTuesday, Wednesday, Thursday, "
              "Friday,\nSaturday,, Monday.\n", "Saturday,", 2, "sunday"),
             ("Hot cross buns!\nHot cross buns!\nOne a penny, two a penny,\nHot cross buns!\n\nHot,, hot!\n",
              "\nHot,", 1, "hot"),
             ("Row, row, row your boat,\nGently down the stream.\nMerrily, merrily, merrily, merrily,\n"
              "Life is but a dream.\n\nRow,, row your boat,\n", "\nRow,", 1, "row")]
    with TestClient(create_app(Settings(models=(str(ROOT / "checkpoints" / "songs-lstm"),)))) as songs:
        for text, mark, syllables, word in cases:
            at = text.rindex(mark) + len(mark)
            shown = alternatives(songs, text=text, start=at, end=at, n=10, syllables=syllables)["alternatives"]
            assert word in [a["text"].lower() for a in shown[:3]], (word, shown)


@pytest.mark.skipif(not (ROOT / "checkpoints" / "songs-lstm").exists(), reason="the shipped songs model is absent")
def test_the_songs_model_offers_other_ideas_for_a_phrase_not_one_phrase_ending_many_ways():
    """For "across the moor" the list was "and cold", "and early", "and deep", "and clear", "and green", "and wan",
    ...; for "blew cold" in two syllables, "was was on" among them. Now no word follows itself, and at most two
    of the ten shown differ only in their last word, where other candidates are left to show."""
    text = "The wind blew cold across the moor,\nMy true love waited by the door"
    with TestClient(create_app(Settings(models=(str(ROOT / "checkpoints" / "songs-lstm"),)))) as songs:
        for part, asked in (("across the moor", {}), ("blew cold", {"syllables": 2}), ("the door", {"stress": "01"})):
            at = text.index(part)
            shown = [WORD.findall(a["text"].lower()) for a in alternatives(
                songs, text=text, start=at, end=at + len(part), n=10, **asked)["alternatives"]]
            assert len(shown) == 10
            assert all(word != following for words in shown for word, following in zip(words, words[1:])), shown
            openings = [" ".join(words[:-1]) for words in shown if len(words) > 1]
            assert all(openings.count(opening) <= 2 for opening in openings), shown


@pytest.mark.skipif(not (ROOT / "checkpoints" / "songs-lstm").exists(), reason="the shipped songs model is absent")
def test_the_songs_model_spells_a_candidate_as_the_right_side_wants_it():
    """After "together,--" the left side alone prefers the word "o" (as in "o' the"); with "God, what a sight!"
    after it the candidate is "O", read in place in both cases and the likelier kept."""
    text = ("Yellow and black men, red, brown, and white.\nAll chained together,--God, what a sight!\n")
    at = text.index("--") + 2
    with TestClient(create_app(Settings(models=(str(ROOT / "checkpoints" / "songs-lstm"),)))) as songs:
        shown = [a["text"] for a in alternatives(songs, text=text, start=at, end=at, n=10, syllables=1)["alternatives"]]
    assert "O" in shown and "o" not in shown, shown
