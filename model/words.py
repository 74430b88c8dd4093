"""The words of a model's training text, kept in its checkpoint (`words.json`): which words the model has seen
as words, and how often. The line search ends lines only on words the model has read as words (not on a
fragment it can spell), and `/v1/neighbours` draws its candidates from them.

A word is a unit as model/units.py defines it (letters, digits, apostrophes), lower-cased, with leading and
trailing apostrophes kept (sung spellings: "lovin'"); only words seen at least MIN_COUNT times are kept.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

WORDS_FILE = "words.json"
MIN_COUNT = 2
FORMAT = "lyricist-words"
_WORD = re.compile(r"(?:[^\W_]|['\u2019])+")


def count_words(text: str) -> dict[str, int]:
    """The text's words (lower-case) seen at least MIN_COUNT times, with their counts, most frequent first."""
    counts = Counter(word.lower().replace("\u2019", "'") for word in _WORD.findall(text))
    return {word: n for word, n in counts.most_common() if n >= MIN_COUNT and any(c.isalpha() for c in word)}


def words_bytes(counts: dict[str, int], about: dict | None = None) -> bytes:
    return (json.dumps({"format": FORMAT, "about": about or {}, "words": counts}, ensure_ascii=False) + "\n").encode()


def read_words(directory: str | Path | None) -> dict[str, int] | None:
    """The checkpoint's training words with their counts, or None when it holds none (a checkpoint from before
    they were kept)."""
    from .checkpoint import _read_manifest, _readable_path, read_extra_file

    if directory is None or WORDS_FILE not in _read_manifest(_readable_path(Path(directory))):
        return None
    return json.loads(read_extra_file(directory, WORDS_FILE))["words"]


def save_words(directory: str | Path, text: str, about: dict) -> Path:
    """Add (or replace) the training words of a checkpoint, atomically, keeping every other file."""
    from .checkpoint import rewrite_checkpoint

    return rewrite_checkpoint(directory, {WORDS_FILE: words_bytes(count_words(text), about)})
