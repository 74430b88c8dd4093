"""The phonology (songwriting/phonology.py): the vendored dictionary, syllables, stress, rhyme parts, perfect
and near rhymes, sung and Scots spellings, and the estimate for words the dictionary lacks."""

import hashlib
import json

import pytest

from lyricist.songwriting import Phonology
from lyricist.songwriting.estimator import ESTIMATOR_PATH, _decode, holdout, holdout_digest, measure
from lyricist.songwriting.dictionary import DICTIONARY_PATH, read_dictionary, rhyme_part
from lyricist.songwriting.phonology import assonance_key, consonance_key
from lyricist.songwriting.spelling import clean

DICTIONARY_SHA256 = "81917843c7f44ce2b094ac63873c2c7a4cf802040792c455ba3ca406891c3d22"


@pytest.fixture(scope="module")
def ph() -> Phonology:
    return Phonology.load()


def first(ph, word):
    return ph.pronunciations(word)[0]


# --- the dictionary --------------------------------------------------------------------------------------------

def test_the_dictionary_is_vendored_unchanged_with_its_licence_and_found_from_the_package():
    raw = DICTIONARY_PATH.read_bytes()
    assert hashlib.sha256(raw).hexdigest() == DICTIONARY_SHA256
    folder = DICTIONARY_PATH.parent
    assert "Carnegie Mellon University" in folder.joinpath("LICENSE").read_text()
    assert DICTIONARY_SHA256 in folder.joinpath("SOURCE.md").read_text()


def test_the_parser_reads_alternates_and_drops_comments():
    entries = read_dictionary(DICTIONARY_PATH.read_text(encoding="utf-8"))
    assert len(entries) == 126_052
    assert entries["night"] == "N AY1 T"
    assert entries["fire"] == ["F AY1 ER0", "F AY1 R"]
    assert entries["aalborg"][0] == "AO1 L B AO0 R G"  # "# place, danish" dropped
    assert entries["the"] == ["DH AH0", "DH AH1", "DH IY0"]
    text = "zed Z EH1 D\nzed(2) Z IY1 # dialect\n"
    assert read_dictionary(text) == {"zed": ["Z EH1 D", "Z IY1"]}


def test_the_singleton_is_shared(ph):
    assert Phonology.load() is ph


# --- syllables, stress, rhyme parts ----------------------------------------------------------------------------

@pytest.mark.parametrize("word, phones, syllables, stress, rhyme", [
    ("night", "N AY1 T", 1, "1", "AY T"),
    ("star", "S T AA1 R", 1, "1", "AA R"),
    ("the", "DH AH0", 1, "0", "AH"),  # a monosyllable keeps the dictionary's mark
    ("understand", "AH2 N D ER0 S T AE1 N D", 3, "101", "AE N D"),  # secondary stress counts as stressed
    ("photograph", "F OW1 T AH0 G R AE2 F", 3, "101", "AE F"),  # ... and can start the rhyme part
    ("higher", "HH AY1 ER0", 2, "10", "AY ER"),
    ("happiness", "HH AE1 P IY0 N AH0 S", 3, "100", "AE P IY N AH S"),
])
def test_known_words(ph, word, phones, syllables, stress, rhyme):
    p = first(ph, word)
    assert " ".join(p.phones) == phones
    assert (p.syllables, p.stress, p.rhyme_part, p.known) == (syllables, stress, rhyme, True)


def test_alternates_are_all_there_and_a_constraint_is_met_by_any(ph):
    assert [str(p) for p in ph.pronunciations("fire")] == ["F AY1 ER0", "F AY1 R"]
    assert ph.syllable_counts("fire") == {1, 2}
    assert ph.syllable_counts("every") == {2, 3}
    assert ph.rhyme_parts("Saturday") == {"AE T ER D IY", "EY"}
    assert ph.stress_patterns("a") == {"0", "1"}


def test_rhyme_part_of_phones():
    assert rhyme_part(("N", "AY1", "T")) == "AY T"
    assert rhyme_part(("DH", "AH0")) == "AH"  # no stressed vowel: from the last vowel
    assert rhyme_part(("AH0", "B", "AW1", "T", "IH0", "NG")) == "AW T IH NG"
    assert rhyme_part(("HH", "M")) == ""
    assert assonance_key("AE P IY") == "AE IY"
    assert consonance_key("AY D") == consonance_key("OW T") == "V T"
    assert consonance_key("EY") == ""


# --- rhymes ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("a, b", [("night", "light"), ("star", "are"), ("fire", "higher"), ("Saturday", "day"),
                                  ("night", "knight"), ("light", "moonlight"), ("Night,", "'delight'")])
def test_perfect_rhymes(ph, a, b):
    assert ph.rhymes(a, b) and ph.rhymes(b, a)
    assert ph.rhyme_kind(a, b) == "perfect"
    assert ph.rhymes(a, b, kind="near")  # near includes perfect


@pytest.mark.parametrize("a, b, why", [
    ("night", "time", "assonance"), ("happy", "daddy", "assonance"), ("night", "note", "consonance"),
    ("love", "prove", "consonance"), ("bet", "bad", "consonance, t/d a voicing pair"),
])
def test_near_rhymes(ph, a, b, why):
    assert ph.rhyme_kind(a, b) == "near", why
    assert ph.rhymes(a, b, kind="near") and not ph.rhymes(a, b)


@pytest.mark.parametrize("a, b", [("cat", "dog"), ("happy", "cat"), ("day", "tree"), ("night", "heart")])
def test_non_rhymes(ph, a, b):
    assert ph.rhyme_kind(a, b) is None
    assert not ph.rhymes(a, b, kind="near")


@pytest.mark.parametrize("a, b", [("night", "night"), ("Night", "night,"), ("lovin'", "loving"),
                                  ("o'er", "over"), ("twa", "two"), ("thro'", "through")])
def test_a_word_never_rhymes_with_itself(ph, a, b):
    assert ph.same_word(a, b)
    assert not ph.rhymes(a, b) and not ph.rhymes(a, b, kind="near")


def test_rhyme_kind_is_checked(ph):
    with pytest.raises(ValueError):
        ph.rhymes("night", "light", kind="slant")


def test_tokens_without_letters_rhyme_with_nothing(ph):
    for token in ("", "123", "...", "&"):
        assert ph.pronunciations(token) == []
        assert not ph.rhymes(token, token) and not ph.rhymes(token, "night")


def test_the_rhyme_index_and_rhyming_words(ph):
    assert {"light", "bite", "knight", "moonlight"} <= set(ph.rhyme_index()["AY T"])
    rhyming = ph.words_rhyming_with("night")
    assert rhyming == sorted(rhyming)
    assert {"light", "knight", "delight"} <= set(rhyming) and "night" not in rhyming
    near = set(ph.words_rhyming_with("night", kind="near"))
    assert {"light", "time", "note"} <= near and "night" not in near
    assert "two" not in ph.words_rhyming_with("twa") and "law" in ph.words_rhyming_with("twa")
    # a word the dictionary lacks still finds its rhymes
    assert "nation" in ph.words_rhyming_with("flimbertation")
    assert "light" in ph.words_rhyming_with("moonbright")  # read as a compound, moon + bright
    # dictionary_only: what an independent reading of the dictionary agrees with ("gae" is G AY1 there)
    assert "day" in ph.words_rhyming_with("gae") and "day" not in ph.words_rhyming_with("gae", dictionary_only=True)


def test_filter_a_vocabulary(ph):
    vocabulary = ["light", "the", "delight", "night", "dark", "bright", "flight,", "morning", "glimmerite"]
    assert ph.filter_rhymes("night", vocabulary) == ["light", "delight", "bright", "flight,", "glimmerite"]


def test_dictionary_syllables_are_the_dictionarys_own(ph):
    table = ph.dictionary_syllables()
    assert table["fire"] == [2, 1] and table["night"] == [1]
    assert "lovin'" not in table and "awa" not in table


# --- folding ---------------------------------------------------------------------------------------------------

def test_clean_strips_quotes_and_punctuation_but_keeps_the_words_apostrophes():
    assert clean("Lovin',") == "lovin'"
    assert clean("\u2018em") == "'em"
    assert clean("'O") == "'o"
    assert clean("gaun?'") == "gaun"
    assert clean("(Night!)") == "night"
    assert clean("bless\u00e8d") == "bless\u00e8d"
    assert clean("caf\u00e9") == "cafe"
    assert clean("\u00fee") == "the"
    assert clean("123") == ""


@pytest.mark.parametrize("token, standard, phones", [
    ("lovin'", "loving", "L AH1 V IH0 N"), ("Lovin\u2019,", "loving", "L AH1 V IH0 N"),
    ("ramblin", "rambling", "R AE1 M B L IH0 N"),
    ("o'", "of", "OW1"), ("'em", "them", "AH0 M"), ("thro'", "through", "TH R UW1"),
    ("thro", "through", "TH R UW1"), ("'tis", "'tis", "T IH1 Z"), ("ne'er", "never", "N EH1 R"),
    ("e'er", "ever", "EH1 R"), ("o'er", "over", "OW1 R"), ("heav'n", "heaven", "HH EH1 V N"),
    ("th'", "the", "DH"), ("an'", "and", "AE1 N"), ("ol'", "old", "OW1 L"),
    ("belov'd", "beloved", "B IH0 L AH1 V D"), ("bless'd", "blessed", "B L EH1 S T"),
    ("bless\u00e8d", "blessed", "B L EH1 S IH0 D"), ("pow'r", "power", "P AW1 R"),
    ("ev'ry", "every", "EH1 V R IY0"), ("whene'er", "whenever", "W EH0 N EH1 R"),
    ("'neath", "beneath", "N IY1 TH"), ("'gainst", "against", "G EH1 N S T"), ("han'", "hand", "HH AE1 N"),
    ("mither's", "mother's", "M IH1 DH ER0 Z"), ("milk-white", "milk-white", "M IH1 L K W AY1 T"),
    ("to-day", "today", "T AH0 D EY1"),
    # early-modern spellings
    ("haue", "have", "HH AE1 V"), ("vpon", "upon", "AH0 P AA1 N"), ("shee", "she", "SH IY1"),
    ("kyng", "king", "K IH1 NG"), ("soone", "soon", "S UW1 N"), ("ffor", "for", "F AO1 R"),
    ("itt", "it", "IH1 T"), ("ladie", "lady", "L EY1 D IY0"), ("euer", "ever", "EH1 V ER0"),
])
def test_sung_and_archaic_spellings_are_folded(ph, token, standard, phones):
    reading = ph.read(token)
    assert reading.word == standard
    assert reading.known
    assert phones in [str(p) for p in reading.pronunciations]


def test_elisions_count_the_syllables_that_are_sung(ph):
    assert ph.syllable_counts("belov'd") == {2}
    assert ph.syllable_counts("beloved") == {2, 3}
    assert ph.syllable_counts("bless\u00e8d") == {2}
    assert ph.syllable_counts("heav'n") == {1}
    assert ph.syllable_counts("o'er") == {1}
    assert ph.syllable_counts("th'") == {0}
    assert ph.syllable_counts("lovin'") == {2}


@pytest.mark.parametrize("scots, gloss, syllables", [
    ("awa", "away", {2}), ("ane", "one", {1}), ("twa", "two", {1}), ("nae", "no", {1}), ("hame", "home", {1}),
    ("frae", "from", {1}), ("wi'", "with", {1}), ("wi", "with", {1}), ("mair", "more", {1}), ("sae", "so", {1}),
    ("auld", "old", {1}), ("ain", "own", {1}), ("a'", "all", {1}), ("gaun", "going", {1}),
    ("couldna", "could not", {2}), ("bonie", "bonny", {2}), ("mither", "mother", {2}),
])
def test_scots_forms_the_dictionary_lacks(ph, scots, gloss, syllables):
    reading = ph.read(scots)
    assert (reading.word, reading.known) == (gloss, True)
    assert ph.syllable_counts(scots) == syllables


def test_scots_forms_rhyme_as_the_songs_rhyme_them(ph):
    # Burns and the ballads rhyme awa / twa / a' / law, hame / name, mair / hair, nae / day
    for a, b in [("awa", "twa"), ("awa", "law"), ("a'", "fa'"), ("hame", "name"), ("mair", "hair"),
                 ("nae", "day"), ("stane", "gane"), ("doun", "sune"), ("een", "yestreen")]:
        assert ph.rhymes(a, b), (a, b)
    # and keep the gloss's sound too, for a singer who anglicises
    assert ph.rhymes("hame", "foam")


def test_the_dictionary_is_never_overruled_only_added_to(ph):
    # "gae" is G AY1 in the dictionary (a name); the table adds the Scots "go"
    prons = [str(p) for p in ph.pronunciations("gae")]
    assert prons[0] == "G AY1" and "G EY1" in prons


# --- the estimate ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("word, syllables, ending", [
    ("blorfing", {2}, "IH NG"), ("flimbertation", {4}, "EY SH AH N"), ("snarkle", {2}, "AH L"),
    ("brillig", {2}, "IH G"), ("mimsy", {2}, "IY"),
])
def test_made_up_words_are_estimated_and_flagged(ph, word, syllables, ending):
    assert word not in ph
    (p,) = ph.pronunciations(word)
    assert p.known is False
    assert not ph.is_known(word)
    assert p.syllables in syllables
    assert p.rhyme_part.endswith(ending)
    assert len(p.stress) == p.syllables and "1" in p.stress


def test_an_estimated_word_rhymes_by_its_estimate(ph):
    assert ph.rhymes("blorfing", "morphing") or ph.rhymes("blorfing", "sing", kind="near")
    assert ph.rhymes("flimbertation", "nation")


def test_the_shipped_estimator_was_trained_without_the_hold_out():
    data = json.loads(ESTIMATOR_PATH.read_text(encoding="utf-8"))
    entries = read_dictionary(DICTIONARY_PATH.read_text(encoding="utf-8"))
    held = holdout(entries)
    assert len(held) == 2000 and held == holdout(entries)  # fixed, not drawn anew
    assert data["holdout"]["sha256"] == holdout_digest(held)
    assert data["dictionary_sha256"] == DICTIONARY_SHA256
    # and not one held-out word's graphone sequence is in the file: spell every sequence back
    graphones = data["graphones"]
    estimator = Phonology.load()._get_estimator()
    words = set()
    flat, lengths = _decode(data["sequences"])
    start = 0
    for n in lengths.tolist():
        words.add("".join(graphones[g].split(":", 1)[0] for g in flat[start:start + n].tolist()))
        start += n
    assert not words & set(held)
    assert "night" in words
    assert estimator.estimate("night") == ("N", "AY1", "T")


def test_held_out_accuracy_meets_the_bars():
    """The measurement of bench/phonology.py, on all 2,000 held-out words (a few seconds)."""
    entries = read_dictionary(DICTIONARY_PATH.read_text(encoding="utf-8"))
    prons = {w: [tuple(p.split()) for p in ([v] if isinstance(v, str) else v)] for w, v in entries.items()}
    figures = measure(Phonology.load()._get_estimator(), prons, holdout(entries))
    assert figures["words"] == 2000
    assert figures["syllables_exact"] >= 0.95
    assert figures["rhyme_part_exact"] >= 0.75
