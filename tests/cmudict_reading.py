"""The tests' own reading of the CMU Pronouncing Dictionary, written here so that the songwriting answers are
checked against the file itself, not against the code under test (songwriting/dictionary.py): per word, for
each pronunciation, its syllables (vowels: phones with a stress digit), its stress (1 for a vowel marked 1 or 2,
0 for one marked 0) and its rhyme part (from the last vowel marked 1 or 2, else the last vowel, to the end,
digits dropped; none for a pronunciation with no vowel), and its vowels' stress digits as written. A word is looked
up lower-cased, a typographic apostrophe as the file's ' ("don’t" is "don't")."""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

CMUDICT = Path(__file__).resolve().parents[1] / "songwriting" / "cmudict" / "cmudict.dict"
WORD = re.compile(r"(?:[^\W_]|['\u2019])+")  # the API's word (docs/api.md): letters, digits, apostrophes


class Sounding(NamedTuple):
    syllables: int
    rhyme: str
    stress: str
    digits: str  # "102": the stress digits of its vowels, as the file has them


@lru_cache(maxsize=1)
def cmudict() -> dict[str, list[Sounding]]:
    entries: dict[str, list[Sounding]] = {}
    for line in CMUDICT.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        head, *phones = line.split()
        vowels = [i for i, phone in enumerate(phones) if phone[-1].isdigit()]
        stressed = [i for i in vowels if phones[i][-1] in "12"]
        start = (stressed or vowels or [None])[-1]
        rhyme = "" if start is None else " ".join(phone.rstrip("012") for phone in phones[start:])
        stress = "".join("0" if phones[i][-1] == "0" else "1" for i in vowels)
        entries.setdefault(re.sub(r"\(\d+\)$", "", head).lower(), []).append(Sounding(len(vowels), rhyme, stress,
                                                                             "".join(phones[i][-1] for i in vowels)))
    return entries


def entry(word: str) -> list[Sounding]:
    return cmudict().get(word.lower().replace("\u2019", "'"), [])


def syllable_sums(text: str) -> set[int]:
    """Every syllable count of a line: one pronunciation per word (a word the dictionary lacks fails)."""
    sums = {0}
    for word in WORD.findall(text):
        counts = {s.syllables for s in entry(word)}
        assert counts, f"{word!r} of {text!r} is not in the dictionary"
        sums = {a + b for a in sums for b in counts}
    return sums


def rhymes(a: str, b: str) -> bool:
    """Two different words sharing a rhyme part in some pair of pronunciations."""
    a, b = a.lower().replace("\u2019", "'"), b.lower().replace("\u2019", "'")
    parts = [{s.rhyme for s in entry(w) if s.rhyme} for w in (a, b)]
    return a != b and bool(parts[0] & parts[1])


def meets_stress(text: str, pattern: str) -> bool:
    """The meter rule of docs/api.md, read from the file: some choice of one pronunciation per word puts every
    vowel marked 1 on a 1 of the pattern and every vowel marked 0 on a 0 (a 2 goes anywhere, and so does the
    one vowel of a one-syllable word), with exactly as many syllables as the pattern has digits."""
    ends = {0}
    for word in WORD.findall(text):
        soundings = entry(word)
        assert soundings, f"{word!r} of {text!r} is not in the dictionary"
        after = set()
        for end in ends:
            for sounding in soundings:
                part = pattern[end:end + sounding.syllables]
                if len(part) == sounding.syllables and (sounding.syllables == 1 or all(
                        d == "2" or d == p for d, p in zip(sounding.digits, part))):
                    after.add(end + sounding.syllables)
        ends = after
    return len(pattern) in ends
