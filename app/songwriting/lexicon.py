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
come from the project's phonology (`app/songwriting/phonology.py`) through
`rhyme_set`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import lru_cache
from pathlib import Path

from lyricist.model.units import is_word_char

MAX_SYLLABLES = 24  # a line's ceiling (docs/api.md); a bit per count fits an int easily

RhymeSet = Callable[[str, str], Iterable[str]]  # (target, "perfect" | "near") -> dictionary words rhyming with it


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


class Lexicon:
    """Dictionary words (lower-case, as written) with their syllable counts, prefix look-ahead, and rhymes.

    `pronounce(word)` (optional) gives a word's pronunciations as (syllables, rhyme part) pairs, estimated
    for a word the dictionary lacks; with it, `rhyme_masks` keeps for each rhyming word only the counts of
    the pronunciations that rhyme ("trying" is T R AY1 IH0 NG or T R AY1 NG: only the first rhymes with
    "crying", so as a rhyme for it, it has two syllables). `near_parts(a, b)` says whether two rhyme parts
    near-rhyme (the phonology's definition)."""

    def __init__(self, syllables: Mapping[str, Sequence[int]], rhyme_set: RhymeSet,
                 pronounce: Callable[[str], Sequence[tuple[int, str]]] | None = None,
                 near_parts: Callable[[str, str], bool] | None = None):
        # Only entries that are one word unit (docs/api.md: letters, digits, apostrophes): "a.m." is three units.
        self.masks: dict[str, int] = {}
        self.primary: dict[str, int] = {}  # the count of its first pronunciation (the dictionary's own order)
        for word, counts in syllables.items():
            word = word.lower()
            counts = list(counts)
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
        self._rhyme_masks: dict[tuple[str, str], dict[str, int]] = {}

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
    def from_phonology(cls, phonology) -> Lexicon:
        """From the project's `Phonology`: its dictionary's own headwords and counts (no folded or estimated
        forms: lines may only use words an outside reader of the dictionary can check), its rhymes read the
        same way (`dictionary_only`), and its definition of a near rhyme."""
        from .phonology import near_rhyme_parts

        def rhyme_set(target: str, kind: str) -> set[str]:
            return phonology.rhyming_words(target, kind, dictionary_only=True)

        def pronounce(word: str) -> list[tuple[int, str]]:
            prons = phonology.dictionary_pronunciations(word) or phonology.pronunciations(word)
            return [(p.syllables, p.rhyme_part) for p in prons]

        return cls(phonology.dictionary_syllables(), rhyme_set, pronounce, near_rhyme_parts)

    @classmethod
    def from_cmudict(cls, path: str | Path, rhyme_set: RhymeSet | None = None) -> Lexicon:
        """Straight from a cmudict file, with perfect rhymes by rhyme part unless `rhyme_set` is given
        (for tests and tools that run without the phonology module)."""
        entries = read_cmudict(path)
        counts = {w: [sum(p[-1].isdigit() for p in phones) for phones in prons] for w, prons in entries.items()}

        def pronounce(word: str) -> list[tuple[int, str]]:
            prons = entries.get(word.lower(), [])
            return [(sum(p[-1].isdigit() for p in phones), rhyme_part(phones)) for phones in prons]

        return cls(counts, rhyme_set or _rhyme_parts(entries), pronounce)


def read_cmudict(path: str | Path) -> dict[str, list[list[str]]]:
    """word -> its pronunciations (phone lists), alternates `word(2)` folded into `word`, comments dropped."""
    entries: dict[str, list[list[str]]] = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        head, *phones = line.split()
        word = head.split("(", 1)[0] if head.endswith(")") else head
        entries.setdefault(word.lower(), []).append(phones)
    return entries


def rhyme_part(phones: list[str]) -> str:
    """From the last vowel with stress 1 or 2 (the last vowel if none) to the end, digits dropped."""
    vowels = [i for i, p in enumerate(phones) if p[-1].isdigit()]
    if not vowels:
        return " ".join(phones)
    stressed = [i for i in vowels if phones[i][-1] in "12"]
    start = stressed[-1] if stressed else vowels[-1]
    return " ".join(p.rstrip("012") for p in phones[start:])


def _rhyme_parts(entries: dict[str, list[list[str]]]) -> RhymeSet:
    by_part: dict[str, set[str]] = {}
    parts_of: dict[str, set[str]] = {}
    for word, prons in entries.items():
        for phones in prons:
            part = rhyme_part(phones)
            by_part.setdefault(part, set()).add(word)
            parts_of.setdefault(word, set()).add(part)

    def rhyme_set(target: str, kind: str) -> set[str]:
        if kind != "perfect":
            raise ValueError("the cmudict fallback knows perfect rhymes only")
        return {w for part in parts_of.get(target.lower(), ()) for w in by_part[part]}

    return rhyme_set


@lru_cache(maxsize=4)
def default_lexicon() -> Lexicon:
    """The project's lexicon: its phonology's dictionary."""
    from .phonology import Phonology

    return Lexicon.from_phonology(Phonology.load())


def cmudict_path() -> Path:
    root = Path(__file__).resolve().parents[2]
    here = Path(__file__).resolve().parent
    for candidate in (here / "cmudict" / "cmudict.dict", root / "data" / "cmudict" / "cmudict.dict",
                      root.parent / "shared" / "data" / "cmudict" / "cmudict.dict"):
        if candidate.exists():
            return candidate
    raise FileNotFoundError("cmudict.dict not found under data/cmudict/")
