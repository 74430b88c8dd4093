"""The CMU Pronouncing Dictionary, read (the one reader of cmudict.dict), and what one pronunciation says:
its syllables, its stress, its rhyme part. The definitions are docs/songwriting.md's (phonology.py's docstring
gives them in full); phonology.py builds words, spellings and rhymes on these."""

from __future__ import annotations

from collections.abc import Iterable
from importlib.resources import files

DICTIONARY_PATH = files(__package__).joinpath("cmudict", "cmudict.dict")
VOWELS = frozenset({"AA", "AE", "AH", "AO", "AW", "AY", "EH", "ER", "EY", "IH", "IY", "OW", "OY", "UH", "UW"})
_DIGITS = str.maketrans("", "", "012")


def read_dictionary(text: str) -> dict[str, str | list[str]]:
    """cmudict.dict -> {word: phones} (a string, or a list of strings when the word has alternates), in the
    file's order. `word(2)` lines are alternates; `#` starts a comment."""
    entries: dict[str, str | list[str]] = {}
    for line in text.splitlines():
        word, _, phones = line.partition(" ")
        if "#" in phones:
            phones = phones.split("#", 1)[0].rstrip()
        if not phones:
            continue
        if word[-1] == ")":
            word = word[: word.index("(")]
            old = entries.get(word)
            if old is None:
                entries[word] = phones
            elif type(old) is str:
                entries[word] = [old, phones]
            else:
                old.append(phones)
        else:
            entries[word] = phones
    return entries


def load_dictionary() -> dict[str, str | list[str]]:
    """The vendored dictionary (read_dictionary of cmudict/cmudict.dict)."""
    return read_dictionary(DICTIONARY_PATH.read_text(encoding="utf-8"))


def is_vowel(phone: str) -> bool:
    return phone[-1] in "012" or phone in VOWELS


def syllable_count(phones: Iterable[str]) -> int:
    return sum(1 for p in phones if is_vowel(p))


def stress_pattern(phones: Iterable[str]) -> str:
    return "".join("1" if p[-1] in "12" else "0" for p in phones if is_vowel(p))


def rhyme_part(phones: tuple[str, ...] | list[str]) -> str:
    """Phones from the last vowel stressed 1 or 2 (else the last vowel) to the end, digits dropped; "" for a
    pronunciation with no vowel."""
    start = None
    for i in range(len(phones) - 1, -1, -1):
        if phones[i][-1] in "12":
            start = i
            break
    if start is None:
        for i in range(len(phones) - 1, -1, -1):
            if is_vowel(phones[i]):
                start = i
                break
    if start is None:
        return ""
    return " ".join(phones[start:]).translate(_DIGITS)


def rhyme_part_of_line(phones: str) -> str:
    """rhyme_part of a dictionary line's phone string, without splitting it (the rhyme index is built from
    these; the dictionary marks every vowel with a digit)."""
    i = max(phones.rfind("1"), phones.rfind("2"))
    if i < 0:
        i = phones.rfind("0")
        if i < 0:
            return ""
    return phones[phones.rfind(" ", 0, i) + 1:].translate(_DIGITS)


