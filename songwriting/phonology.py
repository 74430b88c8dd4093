"""Syllables, stress and rhyme, from the CMU Pronouncing Dictionary (docs/songwriting.md).

    from lyricist.songwriting import Phonology
    ph = Phonology.load()                      # the dictionary, parsed once per process (a cached singleton)
    ph.pronunciations("fire")                  # [F AY1 ER0 (2 syllables), F AY1 R (1)]
    ph.rhymes("night", "light")                # True: both end in the rhyme part "AY T"
    ph.rhymes("night", "time", kind="near")    # True: assonance (same stressed vowel, other coda)
    ph.syllable_counts("lovin'")               # {2}: sung spellings are folded before lookup
    ph.words_rhyming_with("night")             # every dictionary word whose rhyme part is "AY T"

Definitions (the same for the service, the CLI and the benchmarks):

- A **syllable** is a vowel of the pronunciation (ARPAbet vowels carry a stress digit).
- **Stress** is one digit a syllable: "1" where the dictionary marks primary or secondary stress (1 or 2),
  "0" where it marks none. A monosyllable keeps the dictionary's mark (`night` "1", `the` "0"); meter
  checkers should let a monosyllable be either.
- The **rhyme part** is the phones from the last vowel with stress 1 or 2 (the last vowel, if none has) to
  the end, digits dropped: `night` "AY T", `Saturday` "EY", `fire` "AY ER". A word with no vowel has none.
- Two different words rhyme **perfectly** when a pronunciation of one and a pronunciation of the other share
  a rhyme part. They rhyme **near** when they rhyme perfectly or, for some pair of pronunciations, the rhyme
  parts have the same vowels (assonance: `night`/`time`, `happy`/`daddy`), or the same consonants in the
  same places, voiced and voiceless pairs (p/b, t/d, k/g, f/v, th/dh, s/z, sh/zh, ch/jh) counted as one, with
  at least one consonant (consonance: `night`/`note`, `love`/`prove`, `bet`/`bad`).
- A word never rhymes with itself: two spellings are the same word when they fold to the same standard
  spelling (case, quotes, `lovin'`/`loving`, `o'er`/`over`, `twa`/`two`). Homophones (`night`/`knight`) and
  compounds (`light`/`moonlight`) are different words, and rhyme.
"""

from __future__ import annotations

import itertools
import re
import threading
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

from .dictionary import (
    VOWELS,
    is_vowel,
    load_dictionary,
    rhyme_part,
    rhyme_part_of_line,
    stress_pattern,
    syllable_count,
)
from .estimator import ESTIMATOR_PATH, Estimator
from .spelling import IRREGULAR, IRREGULAR_BY_GLOSS, clean, edge_variants, orthographic_variants

VOICELESS = frozenset({"P", "T", "K", "F", "TH", "S", "SH", "CH", "HH"})
SIBILANTS = frozenset({"S", "Z", "SH", "ZH", "CH", "JH"})
_DEVOICE = {"B": "P", "D": "T", "G": "K", "V": "F", "DH": "TH", "Z": "S", "ZH": "SH", "JH": "CH"}

RhymeKind = Literal["perfect", "near"]
# A "word" of more letters than this is no word (the dictionary's longest has 28): it is unknown, with no
# estimated pronunciation. The estimate's cost grows with the letters (a second for 900), so a long run of
# letters in a body must not reach it; nor is such a token kept in the reading cache.
MAX_WORD_LETTERS = 40


# --- rhyme parts compared ----------------------------------------------------------------------------------------

def assonance_key(rhyme: str) -> str:
    """The vowels of a rhyme part: "AY" for "AY T", "AE IY" for "AE P IY"."""
    return " ".join(p for p in rhyme.split() if p in VOWELS)


def consonance_key(rhyme: str) -> str:
    """The consonants of a rhyme part in their places, vowels as V, voiced obstruents as their voiceless
    pair: "V T" for "AY T" and for "AY D". "" when there is no consonant (consonance needs one)."""
    parts = ["V" if p in VOWELS else _DEVOICE.get(p, p) for p in rhyme.split()]
    return " ".join(parts) if any(p != "V" for p in parts) else ""


def near_rhyme_parts(a: str, b: str) -> bool:
    """Whether two rhyme parts are a perfect or a near rhyme (assonance or consonance)."""
    if not a or not b:
        return False
    if a == b or assonance_key(a) == assonance_key(b):
        return True
    ka = consonance_key(a)
    return bool(ka) and ka == consonance_key(b)


@dataclass(frozen=True, slots=True)
class Pronunciation:
    phones: tuple[str, ...]  # ARPAbet, vowels with their stress digit: ("N", "AY1", "T")
    syllables: int
    stress: str  # a digit a syllable, "1" stressed (dictionary 1 or 2), "0" not
    rhyme_part: str  # "AY T"; "" for a pronunciation with no vowel
    known: bool = True  # False: estimated from the spelling (the word is in no dictionary or table)

    @classmethod
    def of(cls, phones: Iterable[str], known: bool = True) -> Pronunciation:
        phones = tuple(phones)
        return cls(phones, syllable_count(phones), stress_pattern(phones), rhyme_part(phones), known)

    def __str__(self) -> str:
        return " ".join(self.phones)


@dataclass(frozen=True, slots=True)
class Reading:
    """How a written word is read: its standard spelling (the word's identity) and its pronunciations."""
    word: str  # "loving" for "Lovin'," ; "" when the token has no letters
    pronunciations: tuple[Pronunciation, ...]
    folded: bool = False  # read through a sung, archaic or Scots spelling rule or table

    @property
    def known(self) -> bool:
        return bool(self.pronunciations) and all(p.known for p in self.pronunciations)


# --- the phonology ---------------------------------------------------------------------------------------------

class Phonology:
    """The dictionary with spelling folding, an estimator for the words it lacks, and rhyme indexes."""

    _instance: Phonology | None = None
    _instance_lock = threading.Lock()

    def __init__(self, entries: Mapping[str, str | list[str]]):
        self._entries = entries
        self._estimator = None
        self._lock = threading.Lock()
        self._indexes: dict[str, dict[str, tuple[str, ...]]] = {}
        self._read_cached = lru_cache(maxsize=200_000)(self._read)

    @classmethod
    def load(cls) -> Phonology:
        """The shipped dictionary, parsed once per process and shared (thread-safe)."""
        if cls._instance is None:
            with cls._instance_lock:
                if cls._instance is None:
                    cls._instance = cls(load_dictionary())
        return cls._instance

    def warm(self) -> Phonology:
        """Load the estimator and build the rhyme indexes now rather than at first use (a service's start)."""
        self._get_estimator()
        for name in ("perfect", "assonance", "consonance"):
            self._index(name)
        return self

    # --- reading words ---------------------------------------------------------------------------------------
    def read(self, word: str) -> Reading:
        """The reading of a token as written (any case, surrounding punctuation and quotes allowed)."""
        if len(word) > 2 * MAX_WORD_LETTERS:
            return self._read(word)
        return self._read_cached(word)

    def pronunciations(self, word: str) -> list[Pronunciation]:
        """Every pronunciation (the dictionary's order; the sung or Scots one first for a folded spelling);
        one estimated pronunciation (known=False) for a word found nowhere; [] for a token with no letters."""
        return list(self.read(word).pronunciations)

    def canonical(self, word: str) -> str:
        """The standard spelling the word folds to: its identity for "a word never rhymes with itself"."""
        return self.read(word).word

    def same_word(self, a: str, b: str) -> bool:
        ca = self.canonical(a)
        return bool(ca) and ca == self.canonical(b)

    def is_known(self, word: str) -> bool:
        """Read from the dictionary or a folding rule, not estimated."""
        return self.read(word).known

    def __contains__(self, word: str) -> bool:
        """A headword of the dictionary itself (lower case, exactly)."""
        return word in self._entries

    def words(self) -> Iterable[str]:
        """The dictionary's headwords."""
        return self._entries.keys()

    def dictionary_pronunciations(self, word: str) -> list[Pronunciation]:
        """The dictionary's entry for `word` exactly as written (lower-cased), no folding, no estimate."""
        return [Pronunciation.of(p) for p in self._dictionary(word.lower())]

    def dictionary_syllables(self) -> dict[str, list[int]]:
        """{headword: its pronunciations' syllable counts} straight from the dictionary (for a generator that
        may only use words an independent reader of the dictionary can check)."""
        out = {}
        for word, phones in self._entries.items():
            if type(phones) is str:
                out[word] = [sum(1 for c in phones if c in "012")]
            else:
                out[word] = list(dict.fromkeys(sum(1 for c in p if c in "012") for p in phones))
        return out

    def syllable_counts(self, word: str) -> set[int]:
        return {p.syllables for p in self.read(word).pronunciations}

    def stress_patterns(self, word: str) -> set[str]:
        return {p.stress for p in self.read(word).pronunciations}

    def rhyme_parts(self, word: str) -> set[str]:
        return {p.rhyme_part for p in self.read(word).pronunciations if p.rhyme_part}

    # --- rhyme -------------------------------------------------------------------------------------------------
    def rhyme_kind(self, a: str, b: str) -> RhymeKind | None:
        """"perfect", "near" (near but not perfect), or None; None also for the same word twice."""
        ra, rb = self.read(a), self.read(b)
        if not ra.word or ra.word == rb.word:
            return None
        parts_a = {p.rhyme_part for p in ra.pronunciations if p.rhyme_part}
        parts_b = {p.rhyme_part for p in rb.pronunciations if p.rhyme_part}
        if parts_a & parts_b:
            return "perfect"
        if any(near_rhyme_parts(x, y) for x in parts_a for y in parts_b):
            return "near"
        return None

    def rhymes(self, a: str, b: str, kind: RhymeKind = "perfect") -> bool:
        """Whether two different words rhyme: kind="perfect", or kind="near" (perfect or near)."""
        if kind not in ("perfect", "near"):
            raise ValueError(f'kind must be "perfect" or "near", not {kind!r}')
        found = self.rhyme_kind(a, b)
        return found == "perfect" or (kind == "near" and found == "near")

    def rhyme_index(self) -> Mapping[str, tuple[str, ...]]:
        """Every dictionary headword grouped by rhyme part ("AY T" -> ("bight", "bite", ...)), a word under
        each of its pronunciations' rhyme parts. Built at first use (a fraction of a second)."""
        return self._index("perfect")

    def warm_rhymes(self) -> Phonology:
        """Build the rhyme indexes now (perfect, assonance, consonance: about a second), not at a first rhyme."""
        for name in ("perfect", "assonance", "consonance"):
            self._index(name)
        return self

    def words_rhyming_with(self, word: str, kind: RhymeKind = "perfect", dictionary_only: bool = False) -> list[str]:
        """The dictionary headwords that rhyme with `word` (which may be any word, even an estimated one),
        the word itself and its other spellings left out; sorted. `dictionary_only`: when `word` is a
        headword, use only its dictionary pronunciations (not the sung or Scots ones the table adds), so
        that an independent reading of the dictionary agrees with every word returned."""
        return sorted(self.rhyming_words(word, kind, dictionary_only))

    def rhyming_words(self, word: str, kind: RhymeKind = "perfect", dictionary_only: bool = False) -> set[str]:
        """As words_rhyming_with, unsorted."""
        if kind not in ("perfect", "near"):
            raise ValueError(f'kind must be "perfect" or "near", not {kind!r}')
        reading = self.read(word)
        prons = reading.pronunciations
        if dictionary_only and self._dictionary(word.lower()):
            prons = tuple(self.dictionary_pronunciations(word))
        found: set[str] = set()
        for part in {p.rhyme_part for p in prons if p.rhyme_part}:
            found.update(self._index("perfect").get(part, ()))
            if kind == "near":
                found.update(self._index("assonance").get(assonance_key(part), ()))
                key = consonance_key(part)
                if key:
                    found.update(self._index("consonance").get(key, ()))
        # the word itself under any spelling: a headword is its own standard spelling unless the table glosses it
        found.difference_update({word, clean(word), reading.word, *IRREGULAR_BY_GLOSS.get(reading.word, ())})
        return found

    def filter_rhymes(self, word: str, candidates: Iterable[str], kind: RhymeKind = "perfect") -> list[str]:
        """The candidates (a model's vocabulary, say) that rhyme with `word`, in their order; words the
        dictionary lacks are estimated."""
        return [c for c in candidates if self.rhymes(word, c, kind)]

    def _index(self, name: str) -> dict[str, tuple[str, ...]]:
        index = self._indexes.get(name)
        if index is None:
            with self._lock:
                index = self._indexes.get(name)
                if index is None:
                    index = self._build_index(name)
                    self._indexes[name] = index
        return index

    def _build_index(self, name: str) -> dict[str, tuple[str, ...]]:
        groups: dict[str, list[str]] = defaultdict(list)
        if name == "perfect":
            for word, phones in self._entries.items():
                if type(phones) is str:
                    groups[rhyme_part_of_line(phones)].append(word)
                else:
                    for part in {rhyme_part_of_line(p) for p in phones}:
                        groups[part].append(word)
            groups.pop("", None)
        else:
            key = assonance_key if name == "assonance" else consonance_key
            for part, words in self._index("perfect").items():
                k = key(part)
                if k:
                    groups[k].extend(words)
        return {k: tuple(v) for k, v in groups.items()}

    # --- reading, the machinery --------------------------------------------------------------------------------
    def _get_estimator(self):
        if self._estimator is None:
            with self._lock:
                if self._estimator is None:
                    self._estimator = Estimator.load(ESTIMATOR_PATH)
        return self._estimator

    def estimate(self, word: str) -> Pronunciation | None:
        """The estimator's guess for a spelling, whether or not the dictionary has the word."""
        phones = self._get_estimator().estimate(word)
        return Pronunciation.of(phones, known=False) if phones is not None else None

    def _dictionary(self, word: str) -> list[tuple[str, ...]]:
        phones = self._entries.get(word)
        if phones is None:
            return []
        if type(phones) is str:
            return [tuple(phones.split())]
        return [tuple(p.split()) for p in phones]

    def _base(self, word: str) -> tuple[str, list[tuple[str, ...]]] | None:
        """A word from the dictionary and/or the irregular table (no rules): (standard spelling, phones).
        The dictionary's pronunciations come first and are never dropped (an independent reading of the
        dictionary agrees with everything it says); the table adds the sung ones and the gloss."""
        prons = self._dictionary(word)
        if word in IRREGULAR:
            gloss, extra = IRREGULAR[word]
            return gloss, list(dict.fromkeys([*prons, *extra]))
        return (word, prons) if prons else None

    def _fold_rules_only(self, word: str) -> tuple[str, list[tuple[str, ...]]] | None:
        """A stem inside another rule, through the rules that need no apostrophe."""
        for rule in (_unmarked_ing, _old_spelling):
            found = rule(self, word)
            if found:
                return found
        return None

    def _read(self, token: str) -> Reading:
        key = clean(token)
        if not key:
            return Reading("", ())
        for variant in edge_variants(key):
            found = self._fold(variant)
            if found is not None:
                return found
        bare = key.strip("'").replace("\u00e8", "e")
        if "-" in bare:
            found = self._compound(bare)
            if found is not None:
                return found
        letters = re.sub(r"[^a-z']", "", bare)
        if not re.search("[a-z]", letters):
            return Reading("", ())
        if len(letters) > MAX_WORD_LETTERS:
            return Reading(letters, ())
        guess = self.estimate(letters)
        prons = [p for p in (self._closed_compound(letters.replace("'", "")), guess) if p is not None]
        return Reading(letters, tuple(dict.fromkeys(prons)))

    def _closed_compound(self, word: str) -> Pronunciation | None:
        """moonbright = moon + bright: two dictionary words of four letters or more, the first stressed, the
        second with secondary stress (as the dictionary's own compounds, "moonlight" M UW1 N L AY2 T). Still
        an estimate (known=False): a name can look like a compound. Listed before the letter-to-sound guess."""
        for i in range(4, len(word) - 3):  # the longest second word first
            head, tail = self._dictionary(word[:i]), self._dictionary(word[i:])
            if head and tail:
                second = tuple(p[:-1] + "2" if p[-1] == "1" else p for p in tail[0])
                return Pronunciation.of(head[0] + second, known=False)
        return None

    def _fold(self, word: str) -> Reading | None:
        """The table, the dictionary, then the spelling rules; None when none of them knows the word."""
        base = self._base(word)
        if base is not None:
            gloss, prons = base
            return _reading(gloss, prons, folded=gloss != word)
        for rule in (_sounded_ed, _elided_ing, _elided_ed, _possessive, _clitic, _proclitic, _dropped_final,
                     _contracted_ever, _elided_vowel, _aphaeresis, _unmarked_ing, _old_spelling, _unmarked_past,
                     _archaic_verb, _scots_past, _plural):
            found = rule(self, word)
            if found is not None:
                gloss, prons = found
                prons = [p for p in prons if p]
                if prons:
                    return _reading(gloss, prons, folded=True)
        return None

    def _compound(self, word: str) -> Reading | None:
        """milk-white, true-love, four-and-twenty: the parts' pronunciations in a row (the joined spelling
        first, if the dictionary has it: to-day -> today)."""
        joined = word.replace("-", "")
        if self._base(joined) is not None:
            return self._fold(joined)
        parts = [self.read(p) for p in word.split("-") if p]
        parts = [p for p in parts if p.pronunciations]
        if not parts:
            return None
        prons = []
        for combo in itertools.islice(itertools.product(*(p.pronunciations[:2] for p in parts)), 8):
            prons.append(Pronunciation.of((ph for p in combo for ph in p.phones),
                                          known=all(p.known for p in combo)))
        return Reading("-".join(p.word for p in parts), tuple(dict.fromkeys(prons)),
                       folded=any(p.folded for p in parts))


def _reading(word: str, prons: Iterable[tuple[str, ...]], folded: bool) -> Reading:
    return Reading(word, tuple(dict.fromkeys(Pronunciation.of(p) for p in prons)), folded)


# --- the spelling rules (each: (phonology, word) -> (standard spelling, [phones...]) or None) ---------------------

def _ends_syllabic_ed(phones: tuple[str, ...]) -> bool:
    return len(phones) >= 2 and phones[-1] == "D" and phones[-2] in ("IH0", "AH0")


def _past(phones: tuple[str, ...]) -> tuple[str, ...]:
    """The -ed ending on a stem, as English voices it: T after a voiceless sound, IH0 D after T or D, else D."""
    last = phones[-1].rstrip("012") if phones else ""
    if last in ("T", "D"):
        return phones + ("IH0", "D")
    return phones + (("T",) if last in VOICELESS else ("D",))


def _sounded_ed(ph: Phonology, word: str):
    """blessèd, belovèd: the -ed is a syllable (the accent says so)."""
    if not word.endswith("\u00e8d"):
        return None
    stem = word[:-2]
    written = stem + "ed"
    found = ph._base(written)
    if found and any(_ends_syllabic_ed(p) for p in found[1]):
        return written, [p for p in found[1] if _ends_syllabic_ed(p)]
    for s in (stem, stem + "e", stem[:-1] if stem[-1:] == stem[-2:-1] else None):
        base = ph._base(s) if s else None
        if base:
            return written, [p + ("IH0", "D") for p in base[1]]
    return None


def _elided_ing(ph: Phonology, word: str):
    """lovin' -> loving, sung with N: L AH1 V IH0 N (the dictionary's own -in' forms are spelled so)."""
    if not word.endswith("in'") or len(word) < 5:
        return None
    full = word[:-1] + "g"
    base = ph._base(full) or ph._fold_rules_only(full)
    if base is None:
        return None
    return base[0], [p[:-1] + ("N",) if p and p[-1] == "NG" else p for p in base[1]]


def _unmarked_ing(ph: Phonology, word: str):
    """lovin, mornin (no apostrophe, the dictionary lacks the word): as lovin'."""
    if word.endswith("in") and len(word) > 4:
        return _elided_ing(ph, word + "'")
    return None


def _elided_ed(ph: Phonology, word: str):
    """belov'd, bless'd, cry'd: -ed with its vowel elided (belov'd is two syllables)."""
    if not word.endswith("'d") or len(word) < 4:
        return None
    stem = word[:-2]
    for full in (stem + "ed", stem + "d", stem[:-1] + "ied" if stem.endswith("y") else None):
        base = ph._base(full) if full else None
        if base:
            plain = [p for p in base[1] if not _ends_syllabic_ed(p)]
            if not plain:  # every reading sounds the vowel: drop it
                plain = [p[:-2] + ("D",) for p in base[1]]
            return full, plain
    base = ph._base(stem) or ph._base(stem + "e")
    if base:
        return word, [_past(p) for p in base[1]]
    return None


def _possessive(ph: Phonology, word: str):
    """mither's, saviour's: the word and the s, as English voices it (IH0 Z after a sibilant)."""
    if not word.endswith("'s") or len(word) < 4:
        return None
    stem = word[:-2]
    base = ph._base(stem) or ph._fold_rules_only(stem)
    if base is None:
        return None
    out = []
    for p in base[1]:
        last = p[-1].rstrip("012") if p else ""
        out.append(p + (("IH0", "Z") if last in SIBILANTS else ("S",) if last in VOICELESS else ("Z",)))
    return base[0] + "'s", out


def _dropped_final(ph: Phonology, word: str):
    """han' -> hand, jus' -> just, sma' -> small: the final consonant unsung."""
    if not word.endswith("'") or len(word) < 3:
        return None
    stem = word[:-1]
    for add, phone in (("d", "D"), ("t", "T"), ("ll", "L"), ("l", "L")):
        base = ph._base(stem + add)
        if base:
            prons = [p[:-1] for p in base[1] if p and p[-1] == phone]
            if prons:
                return base[0], prons
    return None


def _contracted_ever(ph: Phonology, word: str):
    """whene'er, where'er, howe'er (-ever -> -e'er, sung as one syllable); se'en, ta'en-like -'en forms."""
    m = re.fullmatch(r"([a-z]+)'(er|en)", word)
    if not m:
        return None
    head, tail = m.groups()
    for middle, consonant in (("v", "V"), ("th", "DH"), ("k", "K")):
        base = ph._base(head + middle + tail)
        if not base:
            continue
        out = []
        for p in base[1]:
            if tail == "er" and len(p) >= 2 and p[-2] == consonant and p[-1] == "ER0":
                out.append(p[:-2] + ("R",))
            elif tail == "en" and len(p) >= 3 and p[-3] == consonant and p[-2] in ("AH0", "IH0") and p[-1] == "N":
                out.append(p[:-3] + ("N",))
        if out:
            return base[0], out
    return None


def _elided_vowel(ph: Phonology, word: str):
    """heav'n, pow'r, ev'ry, glitt'ring, wat'ry: a vowel letter dropped inside the word, and its syllable
    with it (ER0 becomes R)."""
    m = re.fullmatch(r"([a-z]+)'([a-z]+)", word)
    if not m:
        return None
    head, tail = m.groups()
    position = len(re.findall(r"[aeiouy]+", head))  # the elided vowel is the head's vowels + 1st
    for vowel in "eaiou":
        base = ph._base(head + vowel + tail)
        if not base:
            continue
        out = []
        for p in base[1]:
            vowels = [i for i, x in enumerate(p) if is_vowel(x)]
            if position < len(vowels) and p[vowels[position]].endswith("0"):
                i = vowels[position]
                out.append(p[:i] + (("R",) if p[i] == "ER0" else ()) + p[i + 1:])
        if out:
            return base[0], out
    return None


def _aphaeresis(ph: Phonology, word: str):
    """'neath, 'gainst, 'mongst, 'round: a first syllable dropped. The full word's pronunciation without its
    first vowel and what comes before it; or the rest itself, if it is a word."""
    if not word.startswith("'") or len(word) < 3:
        return None
    rest = word[1:]
    for prefix in ("a", "be", "e"):
        base = ph._base(prefix + rest)
        if base:
            out = []
            for p in base[1]:
                first = next((i for i, x in enumerate(p) if is_vowel(x)), None)
                if first is not None and any(is_vowel(x) for x in p[first + 1:]):
                    out.append(p[first + 1:])
            if out:
                return base[0], out
    return None


_CLITICS = {"ll": ("L",), "re": ("R",), "ve": ("V",), "t": ("T",), "rt": ("R", "T"), "st": ("S", "T"),
            "se": ("Z",)}


def _clitic(ph: Phonology, word: str):
    """ye'll, ye're, ye've, thou'rt, o't, was't, can'st, ye'se: the word and the clitic's consonants, no
    syllable added (after a consonant, 'll and 're take one: it'll, there're are in the dictionary)."""
    m = re.fullmatch(r"([a-z']+?)'(ll|re|ve|t|rt|st|se)", word)
    if not m:
        return None
    head, clitic = m.groups()
    base = ph._base(head)
    if base is None:
        return None
    out = []
    for p in base[1]:
        if p and not is_vowel(p[-1]) and clitic in ("ll", "re"):
            out.append(p + ("AH0",) + _CLITICS[clitic])
        else:
            out.append(p + _CLITICS[clitic])
    return f"{base[0]}'{clitic}", out


def _proclitic(ph: Phonology, word: str):
    """d'ye, t'other, th'eternal: a consonant for the elided word, joined to the next."""
    m = re.fullmatch(r"(d|t|th)'([a-z']+)", word)
    if not m:
        return None
    head, rest = m.groups()
    base = ph._base(rest)
    if base is None:
        return None
    consonant = {"d": "D", "t": "T", "th": "DH"}[head]
    return f"{head}'{base[0]}", [(consonant,) + p for p in base[1]]


def _archaic_verb(ph: Phonology, word: str):
    """aileth, comest, mayst, hadst, wouldst: the old second and third person endings (-eth, -est: a
    syllable; -st after a vowel or as in hadst: none)."""
    for ending, phones in (("eth", ("IH0", "TH")), ("est", ("IH0", "S", "T"))):
        stem = word[: -len(ending)]
        if word.endswith(ending) and len(stem) >= 2 and re.search("[aeiouy]", stem):
            base = ph._base(stem + "e") or ph._base(stem)
            if base:
                return word, [p + phones for p in base[1]]
    stem = word[:-2]
    if word.endswith("st") and len(stem) >= 2 and re.search("[aeiouy]", stem):
        base = ph._base(stem)
        if base:
            return word, [p + ("S", "T") for p in base[1]]
    return None


def _unmarked_past(ph: Phonology, word: str):
    """lookt, dropt, drest, kissd, turnd, drownd: a past tense spelled as sung, -ed not sounded."""
    if len(word) < 4 or word[-1] not in "td" or is_vowel_letter(word[-2]):
        return None
    stem = word[:-1]
    for full in (stem + "ed", stem + stem[-1] + "ed", stem + "d"):
        base = ph._base(full)
        if base:
            plain = [p for p in base[1] if not _ends_syllabic_ed(p)]
            if plain:
                return full, plain
    return None


def _scots_past(ph: Phonology, word: str):
    """hangit, keepit, stickit: the Scots past in -it, a syllable of its own."""
    if word.endswith("it") and len(word) > 4:
        base = ph._base(word[:-2])
        if base:
            return word, [p + ("IH0", "T") for p in base[1]]
    return None


def _plural(ph: Phonology, word: str):
    """braes, griefs, posies, bannocks: a plural (or third person) of a word the dictionary has."""
    if not word.endswith("s") or len(word) < 4 or word.endswith("ss"):
        return None
    for stem in (word[:-1], word[:-2] if word.endswith("es") else None,
                 word[:-3] + "y" if word.endswith("ies") else None):
        base = ph._base(stem) if stem else None
        if base:
            out = []
            for p in base[1]:
                last = p[-1].rstrip("012") if p else ""
                out.append(p + (("IH0", "Z") if last in SIBILANTS else ("S",) if last in VOICELESS else ("Z",)))
            return word, out
    return None


def is_vowel_letter(c: str) -> bool:
    return c in "aeiouy"


def _old_spelling(ph: Phonology, word: str):
    """haue, vpon, shee, soone, ffor, kyng, ladie: early-modern spellings (spelling.orthographic_variants)."""
    if "'" in word:
        return None
    for variant in orthographic_variants(word):
        base = ph._base(variant)
        if base:
            return base
    return None

