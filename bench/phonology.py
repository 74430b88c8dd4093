"""Phonology benchmark (issue 13): the letter-to-sound estimate on held-out dictionary words, and speed.

    python bench/phonology.py [--words N] [--rebuild]

The estimator (songwriting/estimator.json) is trained on the dictionary less a fixed hold-out of 2,000
plain a-z words (estimator.holdout: the words whose sha256 with a fixed seed sorts first). This script
checks that the shipped file was built without them, then estimates each held-out word from its spelling
and compares with the dictionary: syllable count exact, rhyme part exact (either against any of the word's
dictionary pronunciations). Goals: syllables >= 95%, rhyme part >= 75%. `--rebuild` first rebuilds the
estimator from the vendored dictionary into a temporary file and measures that one (the alignment is
deterministic, so the figures are the same). Also printed: the dictionary's load time, the estimator's load
time, the rhyme index's build time, and per-word query times.
"""

from __future__ import annotations

import argparse
import hashlib
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

from lyricist.songwriting.dictionary import DICTIONARY_PATH, read_dictionary
from lyricist.songwriting.estimator import (ESTIMATOR_PATH, HOLDOUT_SIZE, Estimator, build, holdout,
                                            holdout_digest, measure)
from lyricist.songwriting.phonology import Phonology


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--words", type=int, default=HOLDOUT_SIZE, help="measure on the first N held-out words")
    parser.add_argument("--rebuild", action="store_true", help="rebuild the estimator first (a minute or two)")
    args = parser.parse_args()
    command = "python bench/phonology.py" + "".join(f" {shlex.quote(a)}" for a in sys.argv[1:])

    t = time.perf_counter()
    raw = DICTIONARY_PATH.read_bytes()
    entries = read_dictionary(raw.decode("utf-8"))
    load_s = time.perf_counter() - t
    prons = {w: [tuple(p.split()) for p in ([v] if isinstance(v, str) else v)] for w, v in entries.items()}
    held = holdout(entries)

    path = ESTIMATOR_PATH
    if args.rebuild:
        path = Path(tempfile.mkdtemp()) / "estimator.json"
        build(prons, hashlib.sha256(raw).hexdigest(), path, log=lambda s: print(f"  {s}", flush=True))
    t = time.perf_counter()
    estimator = Estimator.load(path)
    estimator_s = time.perf_counter() - t
    recorded = estimator.meta.get("holdout", {})
    if recorded.get("sha256") != holdout_digest(held):
        print(f"{path} was not built without this hold-out: rebuild it "
              "(python -m lyricist.songwriting.estimator build)")
        return 1
    if estimator.meta.get("dictionary_sha256") != hashlib.sha256(raw).hexdigest():
        print(f"{path} was built from another dictionary file: rebuild it")
        return 1

    words = held[: args.words]
    t = time.perf_counter()
    figures = measure(estimator, prons, words)
    per_word_ms = (time.perf_counter() - t) / max(1, len(words)) * 1000

    # the service's view: a fresh Phonology, its index, and lookups
    t = time.perf_counter()
    ph = Phonology(entries)
    t_index = time.perf_counter()
    ph.rhyme_index()
    index_s = time.perf_counter() - t_index
    sample = ["night", "lovin'", "o'er", "Twinkle,", "awa", "milk-white", "belov'd", "heav'n"]
    lookups = []
    for w in sample * 50:
        ph._read_cached.cache_clear()
        t = time.perf_counter()
        ph.pronunciations(w)
        lookups.append(time.perf_counter() - t)
    t = time.perf_counter()
    ph.words_rhyming_with("night")
    rhyming_ms = (time.perf_counter() - t) * 1000

    print(f"held-out words: {figures['words']:,} (of {HOLDOUT_SIZE:,}; the estimator never saw them)")
    print(f"  syllable count exact: {figures['syllables_exact']:.1%}   (goal >= 95%)")
    print(f"  rhyme part exact:     {figures['rhyme_part_exact']:.1%}   (goal >= 75%)")
    print(f"  estimate time: {per_word_ms:.1f} ms a word")
    print(f"dictionary: {len(entries):,} words, parsed in {load_s * 1000:.0f} ms; "
          f"estimator loaded and counted in {estimator_s * 1000:.0f} ms; rhyme index built in {index_s * 1000:.0f} ms")
    print(f"  uncached lookup (folding included) median {statistics.median(lookups) * 1e6:.0f} us; "
          f"words_rhyming_with('night') {rhyming_ms:.1f} ms")
    print(f"reproduce: {command}")
    ok = figures["syllables_exact"] >= 0.95 and figures["rhyme_part_exact"] >= 0.75
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
