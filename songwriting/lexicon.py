"""What constrained generation needs from the dictionary, in the shape it needs it.

Lines and verses are built so that every constraint holds by construction, and
an independent reader of the CMU Pronouncing Dictionary must agree. So a line
may only use words the dictionary knows *as written* (lower-cased): an
estimated pronunciation is fine for `/v1/analyze`, but nobody else can check
it. A word's syllable counts are the vowel counts of its pronunciations; a
line's are every sum of one count per word (a word with two pronunciations,
"fire" F AY1 ER0 / F AY1 R, may be sung either way), and a syllable constraint
is met when one of those sums meets it. That is docs/api.md's rule for one word
("a constraint is met when one pronunciation meets it") applied word by word.

`Lexicon` holds, per dictionary word, its syllable counts as a bit mask (bit s
set: some pronunciation has s syllables), and per prefix of a dictionary word
the union of its completions' masks: the line generator's look-ahead. Rhymes
come from the project's phonology (`songwriting/phonology.py`) through
`rhyme_set`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import lru_cache

from lyricist.model.units import is_word_char

from .meter import fits, scansion
from .phonology import Phonology, near_rhyme_parts

MAX_SYLLABLES = 24  # a line's ceiling (docs/api.md); a bit per count fits an int easily

RhymeSet = Callable[[str, str], Iterable[str]]  # (target, "perfect" | "near") -> dictionary words rhyming with it


def is_whole_word(word: str) -> bool:
    """Not a fragment: a word of one letter is a, I or O, and a clipped one keeps two letters ('em, not 's)."""
    letters = sum(c.isalpha() for c in word)
    return letters >= 2 or word in ("a", "i", "o")


def mask_of(counts: Iterable[int]) -> int:
    mask = 0
    for count in counts:
        mask |= 1 << count
    return mask


def lowest(mask: int) -> int:
    """The smallest count in a non-empty mask."""
    return (mask & -mask).bit_length() - 1


def counts_of(mask: int) -> list[int]:
    return [s for s in range(mask.bit_length()) if mask >> s & 1]


def add_word(totals: int, counts: int, scans: Iterable[str] = (), stress: str | None = None) -> int:
    """The syllable totals (bit t: t syllables so far) after a word of these counts; with a `stress` pattern,
    only by the word's scansions of those counts that fit the pattern where they fall (meter.py)."""
    out = 0
    if stress is None:
        for count in counts_of(counts):
            out |= totals << count
        return out
    for scan in scans:
        if (counts >> len(scan)) & 1:
            for start in counts_of(totals):
                if fits(scan, stress[start:start + len(scan)]):
                    out |= 1 << (start + len(scan))
    return out


class Lexicon:
    """Dictionary words (lower-case, as written) with their syllable counts, prefix look-ahead, and rhymes.

    `pronounce(word)` (optional) gives a word's pronunciations as (syllables, rhyme part) pairs, estimated
    for a word the dictionary lacks; with it, `rhyme_masks` keeps for each rhyming word only the counts of
    the pronunciations that rhyme ("trying" is T R AY1 IH0 NG or T R AY1 NG: only the first rhymes with
    "crying", so as a rhyme for it, it has two syllables). `near_parts(a, b)` says whether two rhyme parts
    near-rhyme (the phonology's definition)."""

    def __init__(self, syllables: Mapping[str, Sequence[int]], rhyme_set: RhymeSet,
                 pronounce: Callable[[str], Sequence[tuple[int, str]]] | None = None,
                 near_parts: Callable[[str, str], bool] | None = None,
                 scansions: Callable[[str], Sequence[str]] | None = None):
        # Only entries that are one word unit (docs/api.md: letters, digits, apostrophes): "a.m." is three units.
        self.masks: dict[str, int] = {}
        self.primary: dict[str, int] = {}  # the count of its first pronunciation (the dictionary's own order)
        for word, counts in syllables.items():
            word = word.lower()
            # A pronunciation without a vowel ("sh" SH, "hmm" HH M) is no syllable: a word sung only so would
            # fill any line for free ("stones sh;" as one syllable), so it is no word a line may use.
            counts = [count for count in counts if count > 0]
            if word and counts and all(is_word_char(c) for c in word):
                self.masks[word] = self.masks.get(word, 0) | mask_of(counts)
                self.primary.setdefault(word, counts[0])
        self.prefixes: dict[str, int] = {}  # every non-empty prefix of a word -> union of its completions' masks
        for word, mask in self.masks.items():
            for end in range(1, len(word) + 1):
                prefix = word[:end]
                self.prefixes[prefix] = self.prefixes.get(prefix, 0) | mask
        self.any_mask = mask_of(s for mask in self.masks.values() for s in counts_of(mask))
        self._rhyme_set = rhyme_set
        self._rhymes: dict[tuple[str, str], frozenset[str]] = {}
        self._pronounce = pronounce
        self._near_parts = near_parts
        self._scansions = scansions
        self._scans: dict[str, tuple[str, ...]] = {}
        self._rhyme_masks: dict[tuple[str, str], dict[str, int]] = {}

    def scansions(self, word: str) -> tuple[str, ...]:
        """The scansions of a dictionary word's pronunciations (songwriting/meter.py: "1", "0" or "x" a
        syllable); without a source of them, every count of the word with each syllable free."""
        found = self._scans.get(word)
        if found is None:
            if self._scansions is not None:
                found = tuple(dict.fromkeys(self._scansions(word)))
            else:
                found = tuple("x" * count for count in counts_of(self.masks.get(word, 0)))
            self._scans[word] = found
        return found

    def __contains__(self, word: str) -> bool:
        return word.lower() in self.masks

    def syllable_mask(self, word: str) -> int:
        """Bit s set when a pronunciation of `word` has s syllables; 0 for a word the dictionary lacks."""
        return self.masks.get(word.lower(), 0)

    def rhymes(self, target: str, kind: str = "perfect") -> frozenset[str]:
        """Dictionary words (lower-case) that rhyme with `target`, never `target` itself."""
        key = (target.lower(), kind)
        if key not in self._rhymes:
            found = {w.lower() for w in self._rhyme_set(target, kind)}
            self._rhymes[key] = frozenset(w for w in found if w in self.masks and w != key[0])
        return self._rhymes[key]

    def rhyme_masks(self, target: str, kind: str = "perfect") -> dict[str, int]:
        """The words of `rhymes(target, kind)`, each with the syllable counts of its pronunciations that rhyme
        with one of the target's (all its counts when this lexicon was given no `pronounce`)."""
        key = (target.lower(), kind)
        found = self._rhyme_masks.get(key)
        if found is None:
            words = self.rhymes(target, kind)
            found = {}
            parts = {part for _, part in self._pronounce(target)} if self._pronounce else None
            for word in words:
                if parts is None:
                    found[word] = self.masks[word]
                    continue
                mask = 0
                if parts:
                    for count, part in self._pronounce(word):
                        if part in parts or (kind == "near" and self._near_parts is not None
                                             and any(self._near_parts(part, other) for other in parts)):
                            mask |= 1 << count
                mask &= self.masks[word]
                if mask:  # a word whose rhyming pronunciation is not its dictionary's is left out
                    found[word] = mask
            self._rhyme_masks[key] = found
        return found

    @classmethod
    def from_phonology(cls, phonology: Phonology) -> Lexicon:
        """From the project's `Phonology`: its dictionary's own headwords and counts (no folded or estimated
        forms: lines may only use words an outside reader of the dictionary can check), its rhymes read the
        same way (`dictionary_only`), and its definition of a near rhyme."""

        def rhyme_set(target: str, kind: str) -> set[str]:
            return phonology.rhyming_words(target, kind, dictionary_only=True)

        def pronounce(word: str) -> list[tuple[int, str]]:
            prons = phonology.dictionary_pronunciations(word) or phonology.pronunciations(word)
            return [(p.syllables, p.rhyme_part) for p in prons]

        def scansions(word: str) -> list[str]:
            return [scansion(p.phones) for p in phonology.dictionary_pronunciations(word)]

        return cls(phonology.dictionary_syllables(), rhyme_set, pronounce, near_rhyme_parts, scansions)


@lru_cache(maxsize=4)
def default_lexicon() -> Lexicon:
    """The project's lexicon: its phonology's dictionary."""
    return Lexicon.from_phonology(Phonology.load())

