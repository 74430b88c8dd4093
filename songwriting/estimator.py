"""Pronunciations for words the dictionary lacks: a joint-sequence (graphone) model learned from the dictionary.

Each dictionary pronunciation is aligned letter by letter (every letter sounds as 0, 1 or 2 phones: `x` ->
`K S`, the `e` of `name` -> nothing), which turns a word into a sequence of graphones such as `n:N a:EY1 m:M
e:`. A 6-gram model with interpolated, modified Kneser-Ney smoothing is trained over those sequences read
right to left (the end of a word, where its rhyme is, is predicted first and with the most context), and a
beam search finds the likeliest graphone sequence that spells the new word. Its phones carry stress digits,
so syllables, stress and the rhyme part follow as for a dictionary word. (Bisani and Ney, 2008, describe the
joint-sequence method; this is our own small implementation, pure Python and numpy.)

What ships is `estimator.json`: the graphone inventory and every aligned dictionary pronunciation except a
fixed hold-out of 2,000 words (`holdout`), which `bench/phonology.py` and the tests use to measure it. The
n-gram counts are made from it in numpy the first time a word needs an estimate (about a second); the slow
step, the alignment (EM over the whole dictionary, minutes), runs only in `build`:

    python -m lyricist.songwriting.estimator build   # rewrites estimator.json from the vendored dictionary
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import re
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

from .dictionary import DICTIONARY_PATH, read_dictionary, rhyme_part, syllable_count

FORMAT = "lyricist-graphones-1"
ORDER = 6  # graphones of context: the one predicted and five before it
BEAM = 20
HOLDOUT_SIZE = 2000
HOLDOUT_SEED = "lyricist-phonology-holdout-1"
ESTIMATOR_PATH = Path(__file__).with_name("estimator.json")
LETTERS = re.compile(r"[a-z']+")
_ALPHABET = "0123456789abcdefghijklmnopqrstuv"  # two of these name a graphone in the shipped file (1,024 ids)


def holdout(words: Iterable[str], size: int = HOLDOUT_SIZE, seed: str = HOLDOUT_SEED) -> list[str]:
    """The fixed hold-out: the `size` plain (a-z) dictionary words whose sha256 with `seed` sorts first.
    The same on every machine and Python version."""
    plain = {w for w in words if w.isascii() and w.isalpha() and w.islower()}
    return sorted(plain, key=lambda w: hashlib.sha256(f"{seed}:{w}".encode()).hexdigest())[:size]


def holdout_digest(words: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(sorted(words)).encode()).hexdigest()


class Estimator:
    """The trained model. `estimate(word)` -> ARPAbet phones with stress digits, or None (no letters)."""

    def __init__(self, graphones: Sequence[str], sequences: Sequence[Sequence[int]] | tuple[np.ndarray, np.ndarray],
                 order: int = ORDER, beam: int = BEAM, meta: Mapping | None = None):
        """`sequences`: each training pronunciation as graphone ids in reading order (left to right), or all
        of them as one array with their lengths."""
        self.graphones = list(graphones)
        self.order, self.beam, self.meta = order, beam, dict(meta or {})
        n = len(self.graphones)
        self._bos, self._eos = n, n + 1
        self._bits = max(1, math.ceil(math.log2(n + 2)))
        if self._bits * order > 62:
            raise ValueError(f"{n} graphones do not pack into 64-bit {order}-grams")
        self._base = 1 << self._bits
        self._phones = [tuple(g.split(":", 1)[1].split()) for g in self.graphones]
        self._primary = np.array([any(p.endswith("1") for p in ph) for ph in self._phones] + [False, False])
        by_letter: dict[str, list[int]] = defaultdict(list)
        for i, g in enumerate(self.graphones):
            by_letter[g.split(":", 1)[0]].append(i)
        self._by_letter = {c: np.array(ids, dtype=np.int64) for c, ids in by_letter.items()}
        self._uniform = 1.0 / (n + 1)
        self._count(sequences)

    # --- training: counts, then interpolated modified Kneser-Ney ---------------------------------------------
    def _count(self, sequences) -> None:
        N, B, bos, eos = self.order, self._base, self._bos, self._eos
        pad = N - 1
        if isinstance(sequences, tuple):  # (flat ids, lengths), as _decode gives them
            flat_in, lengths = sequences
        else:
            lengths = np.fromiter((len(s) for s in sequences), dtype=np.int64, count=len(sequences))
            flat_in = np.fromiter((int(g) for s in sequences for g in s), dtype=np.int64, count=int(lengths.sum()))
        # each row: pad x BOS, the ids read right to left, EOS
        rows = lengths + pad + 1
        row_start = np.concatenate(([0], np.cumsum(rows)[:-1]))
        flat = np.full(int(rows.sum()), bos, dtype=np.int64)
        word = np.repeat(np.arange(len(lengths)), lengths)
        within = np.arange(len(flat_in)) - np.repeat(np.concatenate(([0], np.cumsum(lengths)[:-1])), lengths)
        flat[row_start[word] + pad + (lengths[word] - 1 - within)] = flat_in
        flat[row_start + pad + lengths] = eos
        predicted = np.ones(len(flat), dtype=bool)
        for j in range(pad):
            predicted[row_start + j] = False
        pos = np.nonzero(predicted)[0]
        # key of the m-gram ending at each position: the predicted id in the low bits, older ones above it
        keys = []
        key = np.zeros(len(pos), dtype=np.int64)
        for m in range(1, N + 1):
            key = key + flat[pos - (m - 1)] * (B ** (m - 1))
            keys.append(key.copy())
        self._hist_keys, self._hist_tot, self._hist_gamma = [], [], []
        self._gram_keys, self._gram_counts, self._discounts = [], [], []
        distinct_above = None
        for m in range(N, 0, -1):  # longest first: the lower orders count distinct left extensions
            if m == N:
                grams, counts = _unique(keys[m - 1])
            else:
                grams, counts = _unique(distinct_above % (B ** m))
            distinct_above = _unique(keys[m - 1])[0] if m > 1 else None
            n1, n2, n3, n4 = (max(1, int(np.sum(counts == i))) for i in (1, 2, 3, 4))
            y = n1 / (n1 + 2 * n2)
            d = np.array([0.0, max(0.05, 1 - 2 * y * n2 / n1), max(0.05, 2 - 3 * y * n3 / n2),
                          max(0.05, 3 - 4 * y * n4 / n3)])
            hist = grams // B  # sorted, as grams are
            first = np.concatenate(([0], np.nonzero(hist[1:] != hist[:-1])[0] + 1))
            hkeys = hist[first]
            self._hist_keys.insert(0, hkeys)
            self._hist_tot.insert(0, np.add.reduceat(counts, first).astype(np.float64))
            self._hist_gamma.insert(0, np.add.reduceat(d[np.minimum(counts, 3)], first))
            self._gram_keys.insert(0, grams)
            self._gram_counts.insert(0, counts.astype(np.int64))
            self._discounts.insert(0, d)

        self._dense = self._bigram_table()

    def _bigram_table(self) -> np.ndarray:
        """P(next | one graphone before) for every pair, the first two orders of the interpolation done once."""
        V, B = len(self.graphones) + 2, self._base
        ids = np.arange(V)

        def step(k: int, hist: np.ndarray, lower: np.ndarray) -> np.ndarray:
            keys = self._hist_keys[k]
            i = np.minimum(np.searchsorted(keys, hist), len(keys) - 1)
            found = keys[i] == hist
            grams = hist[:, None] * B + ids[None, :]
            gkeys = self._gram_keys[k]
            j = np.minimum(np.searchsorted(gkeys, grams), len(gkeys) - 1)
            c = np.where(gkeys[j] == grams, self._gram_counts[k][j], 0)
            d = self._discounts[k][np.minimum(c, 3)]
            value = (np.maximum(c - d, 0.0) + self._hist_gamma[k][i][:, None] * lower) / self._hist_tot[k][i][:, None]
            return np.where(found[:, None], value, lower)

        unigram = step(0, np.zeros(1, dtype=np.int64), np.full((1, V), self._uniform))  # (1, V)
        return step(1, ids, unigram)  # (V, V)

    def _prob(self, hist: np.ndarray, nxt: np.ndarray) -> np.ndarray:
        """P(next | history): hist (H,) packed histories (the last ORDER-1 ids), nxt (C,) ids -> (H, C)."""
        B = self._base
        p = self._dense[(hist % B)[:, None], nxt[None, :]]
        for k in range(2, self.order):  # history length k: the (k+1)-grams
            hk = hist % (B ** k)
            keys = self._hist_keys[k]
            i = np.minimum(np.searchsorted(keys, hk), len(keys) - 1)
            rows = np.nonzero(keys[i] == hk)[0]
            if not len(rows):
                break  # no longer history was seen either
            i = i[rows]
            grams = hk[rows][:, None] * B + nxt[None, :]
            gkeys = self._gram_keys[k]
            j = np.minimum(np.searchsorted(gkeys, grams), len(gkeys) - 1)
            c = np.where(gkeys[j] == grams, self._gram_counts[k][j], 0)
            d = self._discounts[k][np.minimum(c, 3)]
            p[rows] = (np.maximum(c - d, 0.0) + self._hist_gamma[k][i][:, None] * p[rows]) / self._hist_tot[k][i][:, None]
        return p

    # --- use -------------------------------------------------------------------------------------------------
    def estimate(self, word: str) -> tuple[str, ...] | None:
        """The likeliest pronunciation of `word` (lower-case letters and apostrophes; others are dropped)."""
        letters = "".join(LETTERS.findall(word.lower()))
        letters = [c for c in letters if c in self._by_letter]
        if not letters:
            return None
        B, top = self._base, self._base ** (self.order - 1)
        start = sum(self._bos * B ** j for j in range(self.order - 1))
        hist = np.array([start], dtype=np.int64)
        score = np.zeros(1)
        primary = np.zeros(1, dtype=bool)  # whether the hypothesis has a vowel with primary stress yet
        back: list[tuple[np.ndarray, np.ndarray]] = []
        for c in reversed(letters):
            cands = self._by_letter[c]
            p = self._prob(hist, cands)
            total = (score[:, None] + np.log(np.maximum(p, 1e-300))).ravel()
            keep = np.argsort(-total, kind="stable")[: self.beam]
            parent, choice = np.divmod(keep, len(cands))
            score = total[keep]
            chosen = cands[choice]
            hist = (hist[parent] * B + chosen) % top
            primary = primary[parent] | self._primary[chosen]
            back.append((parent, chosen))
        score = score + np.log(np.maximum(self._prob(hist, np.array([self._eos]))[:, 0], 1e-300))
        # every English word has a primary stress, a monosyllable too: the likeliest that has one
        best = int(np.argmax(np.where(primary, score, score - 1e6)))
        ids = []
        for parent, chosen in reversed(back):
            ids.append(int(chosen[best]))
            best = int(parent[best])
        # `ids` now runs from the first letter to the last
        return tuple(ph for g in ids for ph in self._phones[g])

    # --- files -----------------------------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path = ESTIMATOR_PATH) -> Estimator:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        if data.get("format") != FORMAT:
            raise ValueError(f"{path}: not a {FORMAT} file")
        return cls(data["graphones"], _decode(data["sequences"]), order=data["order"], meta=data)


def _unique(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted distinct values and how often each occurs (np.unique, by sorting: faster here than its hashing)."""
    ordered = np.sort(values)
    starts = np.concatenate(([0], np.nonzero(ordered[1:] != ordered[:-1])[0] + 1))
    return ordered[starts], np.diff(np.append(starts, len(ordered)))


def _encode(sequences: Iterable[Sequence[int]]) -> str:
    return " ".join("".join(_ALPHABET[g >> 5] + _ALPHABET[g & 31] for g in s) for s in sequences)


def _decode(text: str) -> tuple[np.ndarray, np.ndarray]:
    """The shipped sequences as (all ids in one array, each sequence's length)."""
    lookup = np.zeros(256, dtype=np.int64)
    for i, ch in enumerate(_ALPHABET):
        lookup[ord(ch)] = i
    raw = np.frombuffer(text.encode("ascii"), dtype=np.uint8)
    spaces = np.nonzero(raw == ord(" "))[0]
    bounds = np.concatenate(([-1], spaces, [len(raw)]))
    lengths = (np.diff(bounds) - 1) // 2
    codes = lookup[raw[raw != ord(" ")]]
    return codes[0::2] * 32 + codes[1::2], lengths


# --- building: the alignment ---------------------------------------------------------------------------------

def _strip(phones: Sequence[str]) -> tuple[str, ...]:
    return tuple(p.rstrip("012") for p in phones)


def _viterbi(word: str, phones: Sequence[str], logp: Mapping[tuple[str, str], float]) -> list[int] | None:
    """How many phones each letter sounds (0, 1 or 2) in the best alignment under `logp`."""
    n, m = len(word), len(phones)
    bare = _strip(phones)
    neg = -1e18
    best = [[neg] * (m + 1) for _ in range(n + 1)]
    back = [[0] * (m + 1) for _ in range(n + 1)]
    best[0][0] = 0.0
    for i in range(n):
        row, nxt, c = best[i], best[i + 1], word[i]
        for j in range(m + 1):
            s = row[j]
            if s == neg:
                continue
            for k in (0, 1, 2):
                if j + k > m:
                    break
                v = s + logp.get((c, " ".join(bare[j:j + k])), -20.0)
                if v > nxt[j + k]:
                    nxt[j + k] = v
                    back[i + 1][j + k] = k
    if best[n][m] == neg:
        return None
    sizes, j = [], m
    for i in range(n, 0, -1):
        k = back[i][j]
        sizes.append(k)
        j -= k
    return sizes[::-1]


def _log_probs(counts: Counter) -> dict[tuple[str, str], float]:
    totals: Counter = Counter()
    for (c, _), v in counts.items():
        totals[c] += v
    return {(c, ch): math.log(v / totals[c]) for (c, ch), v in counts.items()}


def align(pairs: Sequence[tuple[str, tuple[str, ...]]], iterations: int = 4,
          log=print) -> list[tuple[str, tuple[str, ...], list[int]]]:
    """Hard EM: start from letter/phone co-occurrence, then re-estimate P(phones | letter) from the best
    alignments a few times. Returns (word, phones, phones per letter) for every pair that aligns."""
    counts: Counter = Counter()
    for word, phones in pairs[::5]:
        bare = _strip(phones)
        for c in set(word):
            for j in range(len(bare)):
                counts[(c, bare[j])] += 1.0
                if j + 1 < len(bare):
                    counts[(c, " ".join(bare[j:j + 2]))] += 0.1
            counts[(c, "")] += 1.0
    logp = _log_probs(counts)
    for it in range(iterations):
        t = time.perf_counter()
        counts = Counter()
        for word, phones in pairs:
            sizes = _viterbi(word, phones, logp)
            if sizes is None:
                continue
            bare, j = _strip(phones), 0
            for c, k in zip(word, sizes):
                counts[(c, " ".join(bare[j:j + k]))] += 1
                j += k
        logp = _log_probs(counts)
        log(f"alignment pass {it + 1}/{iterations}: {time.perf_counter() - t:.0f} s")
    out = []
    for word, phones in pairs:
        sizes = _viterbi(word, phones, logp)
        if sizes is not None:
            out.append((word, phones, sizes))
    return out


def build(entries: Mapping[str, Sequence[tuple[str, ...]]], dictionary_sha256: str,
          out: str | Path = ESTIMATOR_PATH, log=print) -> Path:
    """Align every dictionary pronunciation of a word made of a-z and apostrophes, except the hold-out,
    and write the graphone sequences to `out`."""
    held = holdout(entries)
    held_set = set(held)
    pairs = [(w, p) for w in sorted(entries) if w not in held_set and LETTERS.fullmatch(w) for p in entries[w]]
    log(f"aligning {len(pairs):,} pronunciations ({len(held):,} words held out)")
    aligned = align(pairs, log=log)
    graphones: dict[str, int] = {}
    sequences = []
    for word, phones, sizes in aligned:
        seq, j = [], 0
        for c, k in zip(word, sizes):
            g = f"{c}:{' '.join(phones[j:j + k])}"
            j += k
            seq.append(graphones.setdefault(g, len(graphones)))
        sequences.append(seq)
    if len(graphones) > 32 * 32 - 2:
        raise ValueError(f"{len(graphones)} graphones: more than the file format's 1,022")
    data = {
        "format": FORMAT,
        "description": "Letter-to-sound model for words the CMU Pronouncing Dictionary lacks: the graphone "
                       "sequences of the dictionary's pronunciations (two characters of _ALPHABET per "
                       "graphone id, a space between pronunciations), less the hold-out. Built by "
                       "`python -m lyricist.songwriting.estimator build`; derived from cmudict.dict, "
                       "same licence (cmudict/LICENSE).",
        "dictionary_sha256": dictionary_sha256,
        "order": ORDER,
        "holdout": {"seed": HOLDOUT_SEED, "size": len(held), "sha256": holdout_digest(held)},
        "unaligned": len(pairs) - len(aligned),
        "graphones": list(graphones),
        "sequences": _encode(sequences),
    }
    out = Path(out)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, separators=(",", ":")) + "\n", encoding="utf-8")
    tmp.replace(out)
    log(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB, {len(graphones)} graphones, "
        f"{len(sequences):,} sequences, {data['unaligned']} unaligned)")
    return out


# --- measuring -----------------------------------------------------------------------------------------------

def measure(estimator: Estimator, entries: Mapping[str, Sequence[tuple[str, ...]]],
            words: Sequence[str]) -> dict[str, float]:
    """Syllable count and rhyme part exact, against any of each word's dictionary pronunciations."""
    syllables = rhyme = 0
    for w in words:
        guess = estimator.estimate(w) or ()
        prons = entries[w]
        syllables += syllable_count(guess) in {syllable_count(p) for p in prons}
        rhyme += rhyme_part(guess) in {rhyme_part(p) for p in prons}
    n = max(1, len(words))
    return {"words": len(words), "syllables_exact": syllables / n, "rhyme_part_exact": rhyme / n}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lyricist.songwriting.estimator",
                                     description="Build the letter-to-sound model from the vendored dictionary.")
    parser.add_argument("command", choices=["build"])
    parser.add_argument("--out", default=str(ESTIMATOR_PATH))
    args = parser.parse_args(argv)
    raw = Path(DICTIONARY_PATH).read_bytes()
    entries = read_dictionary(raw.decode("utf-8"))
    build({w: [tuple(p.split()) for p in ([v] if isinstance(v, str) else v)] for w, v in entries.items()},
          hashlib.sha256(raw).hexdigest(), args.out, log=lambda s: print(s, file=sys.stderr, flush=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
