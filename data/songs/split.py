"""Split songs.txt into train.txt and valid.txt, by song family.

Versions of one ballad share many lines, so a song and all its versions
(the same title once a "(Child N, version X)" part is removed) fall on the
same side: otherwise the validation figure would be optimistic (README.md).
A family goes to validation when a hash of its title lands in the lowest
VALID_PERCENT of 100 buckets, so the split is stable and needs no seed.

    python data/songs/split.py        # rewrites train.txt and valid.txt beside this file
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

VALID_PERCENT = 10
SONG_SEPARATOR = "\n\n\n"
_VERSION = re.compile(r"\s*\(Child \d+[^)]*\)\s*$")


def family(song: str) -> str:
    """The title without its version mark, case folded: the unit the split keeps whole."""
    title = song.split("\n", 1)[0].removeprefix("SONG:").strip()
    return _VERSION.sub("", title).casefold()


def is_validation(song: str) -> bool:
    bucket = int.from_bytes(hashlib.sha256(family(song).encode()).digest()[:8], "big") % 100
    return bucket < VALID_PERCENT


def split(text: str) -> tuple[str, str]:
    songs = text.strip("\n").split(SONG_SEPARATOR)
    train = [s for s in songs if not is_validation(s)]
    valid = [s for s in songs if is_validation(s)]
    return SONG_SEPARATOR.join(train) + "\n", SONG_SEPARATOR.join(valid) + "\n"


def main() -> None:
    here = Path(__file__).parent
    train, valid = split((here / "songs.txt").read_text(encoding="utf-8"))
    (here / "train.txt").write_text(train, encoding="utf-8")
    (here / "valid.txt").write_text(valid, encoding="utf-8")
    print(f"train.txt: {train.count('SONG:')} songs, {len(train):,} characters; "
          f"valid.txt: {valid.count('SONG:')} songs, {len(valid):,} characters")


if __name__ == "__main__":
    main()
