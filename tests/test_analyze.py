"""Lyric analysis (songwriting/analysis.py) and `lyricist analyze`."""

import json

import pytest

from lyricist.songwriting import Phonology
from lyricist.songwriting.analysis import analyze_text, assign_scheme, split_stanzas, words_of
from lyricist.app.commands import add_analyze_command  # noqa: F401  (the entry point resolves)
from lyricist.model.cli import main

TWINKLE = """Twinkle, twinkle, little star,
How I wonder what you are!
Up above the world so high,
Like a diamond in the sky.
"""

BURNS = """O my luve is like a red, red rose,
That's newly sprung in June:
O my luve is like the melodie,
That's sweetly play'd in tune.

As fair art thou, my bonie lass,
So deep in luve am I;
And I will luve thee still, my dear,
Till a' the seas gang dry.
"""


@pytest.fixture(scope="module")
def ph() -> Phonology:
    return Phonology.load()


def test_a_stanza_line_by_line(ph):
    (stanza,) = analyze_text(TWINKLE, ph)
    assert stanza["scheme"] == "AABB"
    first = stanza["lines"][0]
    assert first == {"text": "Twinkle, twinkle, little star,", "syllables": 7, "stress": "1010101",
                     "end_word": "star", "rhyme_part": "AA R", "rhyme": "A", "unknown_words": []}
    assert [ln["syllables"] for ln in stanza["lines"]] == [7, 7, 7, 7]
    assert [ln["end_word"] for ln in stanza["lines"]] == ["star", "are", "high", "sky"]
    assert [ln["rhyme_part"] for ln in stanza["lines"]] == ["AA R", "AA R", "AY", "AY"]
    assert all("nats_per_char" not in ln for ln in stanza["lines"])


def test_stanzas_split_on_blank_lines_and_sung_spellings_count(ph):
    stanzas = analyze_text(BURNS, ph)
    assert [s["scheme"] for s in stanzas] == ["-A-A", "-A-A"]
    assert stanzas[0]["lines"][3]["syllables"] == 6  # "play'd" is one syllable
    assert stanzas[1]["lines"][3]["end_word"] == "dry"
    assert stanzas[1]["lines"][3]["syllables"] == 6  # a' and gang are read, not estimated
    assert all(not ln["unknown_words"] for s in stanzas for ln in s["lines"])


def test_blank_lines_crlf_and_indentation():
    text = "\r\n\r\n  one night\r\nthe light\r\n \r\n\r\n\tsecond stanza\r\n"
    assert [[text[a:b] for a, b in stanza] for stanza in split_stanzas(text)] == [["one night", "the light"],
                                                                                ["second stanza"]]
    assert split_stanzas("") == [] and split_stanzas("\n \n") == []


def test_scheme_rules(ph):
    assert assign_scheme(["night", "day", "light", "way"], ph) == list("ABAB")
    assert assign_scheme(["night", "day", "rose", "cat"], ph) == list("----")
    # a word never rhymes with itself, but a third line can join them
    assert assign_scheme(["night", "night"], ph) == list("--")
    assert assign_scheme(["night", "light", "night"], ph) == list("AAA")
    # near rhymes count only when asked
    assert assign_scheme(["time", "night"], ph) == list("--")
    assert assign_scheme(["time", "night"], ph, rhyme="near") == list("AA")
    assert assign_scheme([None, "night", "light"], ph) == list("-AA")


def test_unknown_words_are_estimated_and_listed(ph):
    (stanza,) = analyze_text("The blorfing snarkle sang\nA song of glimmerite\n", ph)
    assert stanza["lines"][0]["unknown_words"] == ["blorfing", "snarkle"]
    assert stanza["lines"][0]["syllables"] == 1 + 2 + 2 + 1
    assert stanza["lines"][1]["unknown_words"] == ["glimmerite"]


def test_words_numbers_and_symbols(ph):
    assert words_of("light\u2014night / day--way") == ["light", "night", "day", "way"]
    (stanza,) = analyze_text("Me & you in 1999\n", ph)
    line = stanza["lines"][0]
    assert line["unknown_words"] == ["1999"]
    assert line["syllables"] == 4  # me, and, you, in
    assert line["end_word"] == "in"
    (stanza,) = analyze_text("...\n", ph)
    assert stanza["lines"][0]["end_word"] is None and stanza["lines"][0]["syllables"] == 0


def test_the_model_hook_adds_nats_per_char(ph):
    seen = []

    def scorer(text, spans):
        seen.append([text[a:b] for a, b in spans])
        return [0.5 * (i + 1) for i in range(len(spans))]

    stanzas = analyze_text(BURNS, ph, scorer=scorer)
    assert seen[0][0] == "O my luve is like a red, red rose," and len(seen[0]) == 8
    assert [ln["nats_per_char"] for s in stanzas for ln in s["lines"]] == [0.5 * (i + 1) for i in range(8)]
    with pytest.raises(ValueError):
        analyze_text(BURNS, ph, scorer=lambda text, spans: [1.0])


def test_cli_table_and_json(tmp_path, capsys):
    song = tmp_path / "twinkle.txt"
    song.write_text(TWINKLE, encoding="utf-8")
    assert main(["analyze", str(song)]) == 0
    table = capsys.readouterr().out
    assert "scheme AABB" in table and "Twinkle, twinkle, little star," in table and "AA R" in table
    assert "meter trochaic tetrameter (fit 1.00)" in table
    assert main(["analyze", "--json", str(song)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["model"] is None
    assert data["stanzas"] == analyze_text(TWINKLE, Phonology.load())


def test_cli_reads_standard_input_and_near(monkeypatch, capsys):
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO("in time\nat night\n"))
    assert main(["analyze", "--json", "--near", "-"]) == 0
    assert json.loads(capsys.readouterr().out)["stanzas"][0]["scheme"] == "AA"
    monkeypatch.setattr("sys.stdin", io.StringIO("in time\nat night\n"))
    assert main(["analyze", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["stanzas"][0]["scheme"] == "--"


def test_cli_missing_file(tmp_path, capsys):
    assert main(["analyze", str(tmp_path / "nope.txt")]) == 1
    assert "nope.txt" in capsys.readouterr().err


FROST = """Whose woods these are I think I know.
His house is in the village though;
He will not see me stopping here
To watch his woods fill up with snow.
"""

MOORE = """'Twas the night before Christmas, when all through the house
Not a creature was stirring, not even a mouse;
"""


def test_meter_names_the_foot_and_the_feet(ph):
    (frost,) = analyze_text(FROST, ph)
    assert frost["meter"] == {"name": "iambic tetrameter", "fit": 1.0}
    (twinkle,) = analyze_text(TWINKLE, ph)  # seven syllables a line: trochees with the last one cut
    assert twinkle["meter"]["name"] == "trochaic tetrameter" and 0.75 <= twinkle["meter"]["fit"] <= 1
    (moore,) = analyze_text(MOORE, ph)
    assert moore["meter"]["name"] == "anapestic tetrameter"
    # one-syllable words fit every foot: nothing to tell them apart, so no meter
    assert analyze_text("I go to the sea\nand see the red sun\n", ph)[0]["meter"] is None
    # stresses that follow no foot
    assert analyze_text("Nevertheless the elephant remembered\nConversations amazing beautiful\n", ph)[0]["meter"] is None


def test_the_meter_rule():
    from lyricist.songwriting.meter import fits, line_fits, scansion

    assert scansion(["B", "AH0", "N", "AE1", "N", "AH0"]) == "010"  # banana
    assert scansion(["K", "AE1", "T"]) == "x"  # a monosyllable goes anywhere
    assert scansion(["AE1", "N", "T", "IY0", "L", "OW2", "P"]) == "10x"  # a secondary stress too
    assert fits("010", "010") and not fits("010", "100") and not fits("010", "01")
    assert line_fits([["x"], ["010", "10"]], "010") and not line_fits([["x"], ["01"]], "010")
