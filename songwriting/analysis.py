"""What a songwriter counts in lyrics: per line syllables, stress, end word, rhyme part, scheme letter, and the
words the dictionary lacks (the shape of `/v1/analyze`, docs/api.md; text only: the model's surprisal is
added by a `scorer`, see `analyze_text`).

Stanzas are separated by blank lines. The scheme is assigned per stanza, line by line: a line takes the
group of the first earlier line in the stanza whose end word rhymes with its own (perfect rhymes by default,
`rhyme="near"` to count near rhymes too); otherwise it starts a group. Groups of two or more lines get the
letters A, B, C... in order of first appearance; a line alone in its group gets "-". A word never rhymes with
itself, so a line that repeats the end word of another is only grouped with it through a third line that
rhymes with both (night / light / night: A A A; night / night: - -).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from string import ascii_uppercase
from typing import Any

from .meter import best_meter, scansion
from .phonology import Phonology, RhymeKind
from .spelling import clean

LineScorer = Callable[[str, Sequence[tuple[int, int]]], Sequence[float]]
"""(the whole text, each line's (start, end) offsets in it) -> nats per character of each line in context."""

_TOKENS = re.compile(r"[^\s\u2014\u2013/]+")
_DIGIT = re.compile(r"\d")
_SYMBOLS = {"&": "and", "&c": "etc", "&c.": "etc"}


def split_stanzas(text: str) -> list[list[tuple[int, int]]]:
    """The (start, end) offsets of each non-blank line, grouped in stanzas (blank lines separate them)."""
    stanzas: list[list[tuple[int, int]]] = []
    current: list[tuple[int, int]] = []
    pos = 0
    for raw in text.splitlines(keepends=True):
        body = raw.rstrip("\r\n")
        if body.strip():
            start = pos + (len(body) - len(body.lstrip()))
            current.append((start, pos + len(body.rstrip())))
        elif current:
            stanzas.append(current)
            current = []
        pos += len(raw)
    if current:
        stanzas.append(current)
    return stanzas


def words_of(line: str) -> list[str]:
    """The line's word tokens as written (dashes and slashes separate words; "--" too)."""
    out = []
    for token in _TOKENS.findall(line):
        out.extend(t for t in token.split("--") if t)
    return out


def analyze_line(line: str, phonology: Phonology) -> dict[str, Any]:
    """One line's counts: each word's first pronunciation (the dictionary's most usual; the sung one for a
    folded spelling) gives its syllables and stress."""
    syllables, stress, unknown, scans = 0, [], [], []
    end_word, end_part = None, ""
    for token in words_of(line):
        token = _SYMBOLS.get(token, token)
        key = clean(token)
        if _DIGIT.search(token):  # numbers are not read out: counted as unknown, no syllables
            unknown.append(token.strip(".,;:!?\"'()[]{}"))
            continue
        if not key:
            continue
        reading = phonology.read(token)
        if not reading.pronunciations:
            if reading.word and key not in unknown:  # letters too many to be a word: unknown, not estimated
                unknown.append(key)
            continue
        first = reading.pronunciations[0]
        syllables += first.syllables
        stress.append(first.stress)
        scans.append(scansion(first.phones))
        if not reading.known and key not in unknown:
            unknown.append(key)
        end_word, end_part = key, first.rhyme_part
    return {"text": line, "syllables": syllables, "stress": "".join(stress), "end_word": end_word,
            "rhyme_part": end_part, "rhyme": "-", "unknown_words": unknown, "scansion": "".join(scans)}


def assign_scheme(end_words: Sequence[str | None], phonology: Phonology, rhyme: RhymeKind = "perfect") -> list[str]:
    """Scheme letters for a stanza's end words (the rule in the module docstring)."""
    group: list[int] = []
    for i, word in enumerate(end_words):
        g = i
        if word:
            for j in range(i):
                if end_words[j] and phonology.rhymes(word, end_words[j], rhyme):
                    g = group[j]
                    break
        group.append(g)
    sizes = {g: group.count(g) for g in group}
    letters: dict[int, str] = {}
    out = []
    for g in group:
        if sizes[g] < 2:
            out.append("-")
            continue
        if g not in letters:
            n = len(letters)
            letters[g] = ascii_uppercase[n] if n < 26 else ascii_uppercase[n // 26 - 1] + ascii_uppercase[n % 26]
        out.append(letters[g])
    return out


def analyze_text(text: str, phonology: Phonology | None = None, *, rhyme: RhymeKind = "perfect",
                 scorer: LineScorer | None = None) -> list[dict[str, Any]]:
    """Lyrics -> [{"scheme": "AABB", "lines": [{"text", "syllables", "stress", "end_word", "rhyme_part",
    "rhyme", "unknown_words"}, ...]}, ...], as `/v1/analyze`'s "stanzas".

    `scorer` is the hook for the model: given, each line also gets "nats_per_char" (how surprising the model
    finds the line in its context), from one call with the whole text and every line's offsets."""
    phonology = phonology or Phonology.load()
    spans = split_stanzas(text)
    stanzas = []
    for stanza in spans:
        lines = [analyze_line(text[a:b], phonology) for a, b in stanza]
        for line, letter in zip(lines, assign_scheme([ln["end_word"] for ln in lines], phonology, rhyme)):
            line["rhyme"] = letter
        meter = best_meter([line.pop("scansion") for line in lines])
        stanzas.append({"scheme": "".join(ln["rhyme"] for ln in lines), "meter": meter, "lines": lines})
    if scorer is not None:
        flat = [span for stanza in spans for span in stanza]
        values = list(scorer(text, flat))
        if len(values) != len(flat):
            raise ValueError(f"the scorer gave {len(values)} figures for {len(flat)} lines")
        lines = [line for stanza in stanzas for line in stanza["lines"]]
        for line, value in zip(lines, values):
            line["nats_per_char"] = float(value)
    return stanzas


def format_table(stanzas: Sequence[dict[str, Any]]) -> str:
    """A readable table: one row a line, a blank line between stanzas, the scheme above each."""
    out = []
    has_nats = any("nats_per_char" in ln for st in stanzas for ln in st["lines"])
    for n, stanza in enumerate(stanzas, 1):
        meter = stanza.get("meter")
        meter_text = f"  meter {meter['name']} (fit {meter['fit']:.2f})" if meter else "  meter none"
        out.append(f"stanza {n}  scheme {stanza['scheme']}{meter_text}")
        header = f"  {'syl':>3}  {'stress':<14} {'rhyme':<5} {'end word':<14} {'rhyme part':<12}"
        out.append(header + ("  nats/char" if has_nats else "") + "  line")
        for ln in stanza["lines"]:
            row = (f"  {ln['syllables']:>3}  {ln['stress']:<14} {ln['rhyme']:<5} {ln['end_word'] or '':<14} "
                   f"{ln['rhyme_part']:<12}")
            if has_nats:
                row += f"  {ln.get('nats_per_char', float('nan')):9.3f}"
            row += f"  {ln['text']}"
            if ln["unknown_words"]:
                row += f"   [estimated: {', '.join(ln['unknown_words'])}]"
            out.append(row)
        out.append("")
    return "\n".join(out).rstrip() + "\n"
