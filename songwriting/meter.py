"""Meter: where a line's stresses fall, against a pattern asked for (`stress`) or the feet of the common meters.

The rule (docs/api.md, "Meter"), for one pronunciation per word: a syllable with primary stress (CMUdict 1)
must fall on a 1 of the pattern, an unstressed one (0) on a 0; a secondary stress (2) fits either, and so does
every syllable of a one-syllable word (a monosyllable is stressed or not by its place in the line). A word's
**scansion** is a string of its syllables, each "1", "0" or "x" (either), per pronunciation.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

FEET = {"iambic": "01", "trochaic": "10", "anapestic": "001", "dactylic": "100"}
MEASURES = {1: "monometer", 2: "dimeter", 3: "trimeter", 4: "tetrameter", 5: "pentameter", 6: "hexameter",
            7: "heptameter", 8: "octameter"}
MIN_FIT = 0.75  # below this share of agreeing syllables a stanza has no meter worth the name
MIN_DECIDING = 4  # stress-bearing syllables a stanza needs before its meter can be told


def scansion(phones: Sequence[str]) -> str:
    """A pronunciation's syllables as the rule reads them: "1" primary, "0" unstressed, "x" either."""
    digits = [p[-1] for p in phones if p[-1] in "012"]
    if len(digits) == 1:
        return "x"
    return "".join("x" if d == "2" else d for d in digits)


def fits(scan: str, pattern: str) -> bool:
    """Whether a scansion fits a stress pattern of the same length."""
    return len(scan) == len(pattern) and all(s == "x" or s == p for s, p in zip(scan, pattern))


def line_fits(word_scans: Sequence[Iterable[str]], pattern: str) -> bool:
    """Whether some choice of one pronunciation per word (each word's scansions) fits the pattern whole."""
    ends = {0}
    for scans in word_scans:
        ends = {end + len(s) for end in ends for s in scans if fits(s, pattern[end:end + len(s)])}
        if not ends:
            return False
    return len(pattern) in ends


def agreement(scan: str, pattern: str) -> int:
    """How many syllables of a scansion agree with a pattern (as long or longer)."""
    return sum(1 for s, p in zip(scan, pattern) if s == "x" or s == p)


def best_meter(line_scans: Sequence[str]) -> dict | None:
    """The stanza's meter: the foot whose pattern the most of its stress-bearing syllables agree with (the
    syllables of words of two or more; ties go to the more common foot, in FEET's order), named by its most
    common number of feet a line ("iambic tetrameter"), with `fit` the share of all its syllables that agree
    (docs/api.md). None when no foot reaches MIN_FIT, or when fewer than MIN_DECIDING syllables bear a stress
    the rule can read: a stanza of one-syllable words fits every foot, so it has none."""
    syllables = sum(len(scan) for scan in line_scans)
    deciding = sum(len(scan) - scan.count("x") for scan in line_scans)
    if not syllables or deciding < MIN_DECIDING:
        return None
    best = None
    for name, foot in FEET.items():
        agree = sum(agreement(scan, foot * (len(scan) // len(foot) + 1)) for scan in line_scans)
        if best is None or agree > best[1]:
            best = (name, agree, foot)
    name, agree, foot = best
    fit = agree / syllables
    if fit < MIN_FIT:
        return None
    feet = Counter(max(1, round(len(scan) / len(foot))) for scan in line_scans if scan).most_common(1)[0][0]
    measure = MEASURES.get(feet, f"{feet}-foot")
    return {"name": f"{name} {measure}", "fit": round(fit, 4)}
