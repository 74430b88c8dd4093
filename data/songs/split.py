"""Split songs.txt into train.txt and valid.txt, by song family.

Versions of one ballad share many lines, so a song and all its versions fall
on the same side: otherwise the validation figure would be optimistic
(README.md). A family is the title once a "(Child N, version X)" part is
removed, case folded; families whose songs share much of their text (a
ballad printed under another title in another book) are joined into one
group. A group goes to validation when any of its families' titles hashes
into the lowest VALID_PERCENT of 100 buckets, so the split is stable, needs no
seed, and keeps every song of edition 1's validation split (valid-edition1.txt)
in validation, with every version of it the new books brought.

    python data/songs/split.py        # rewrites train.txt and valid.txt beside this file
"""

from __future__ import annotations

import hashlib
import re
from collections import defaultdict
from pathlib import Path

VALID_PERCENT = 10
SONG_SEPARATOR = "\n\n\n"
_VERSION = re.compile(r"\s*\(Child \d+[^)]*\)\s*$")
# Two songs are versions of one another when this share of the shorter one's word 3-grams is in the other,
# with at least SHARED_MIN of them in common (a shared refrain or doxology alone does not join two songs).
SHARED_SHARE = 0.3
SHARED_MIN = 12


def family(song: str) -> str:
    """The title without its version mark, case folded."""
    title = song.split("\n", 1)[0].removeprefix("SONG:").strip()
    return _VERSION.sub("", title).casefold()


def hashes_to_validation(family_key: str) -> bool:
    bucket = int.from_bytes(hashlib.sha256(family_key.encode()).digest()[:8], "big") % 100
    return bucket < VALID_PERCENT


def _shingles(song: str) -> set[str]:
    words = re.findall(r"[a-z]+", song.split("\n", 1)[-1].lower())
    return {" ".join(words[i:i + 3]) for i in range(len(words) - 2)}


def groups(songs: list[str]) -> list[int]:
    """For each song, the id of its group: same family, or text shared as versions share it (union-find)."""
    parent = list(range(len(songs)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def join(i: int, j: int) -> None:
        parent[find(i)] = find(j)

    first_of_family: dict[str, int] = {}
    for i, song in enumerate(songs):
        join(i, first_of_family.setdefault(family(song), i))
    shingles = [_shingles(song) for song in songs]
    index: dict[str, list[int]] = defaultdict(list)
    for i, grams in enumerate(shingles):
        shared: dict[int, int] = defaultdict(int)
        for gram in grams:
            for j in index[gram]:
                shared[j] += 1
            index[gram].append(i)
        for j, count in shared.items():
            if count >= SHARED_MIN and count >= SHARED_SHARE * min(len(grams), len(shingles[j])):
                join(i, j)
    return [find(i) for i in range(len(songs))]


def split(text: str) -> tuple[str, str]:
    songs = text.strip("\n").split(SONG_SEPARATOR)
    group_of = groups(songs)
    valid_groups = {g for song, g in zip(songs, group_of) if hashes_to_validation(family(song))}
    train = [s for s, g in zip(songs, group_of) if g not in valid_groups]
    valid = [s for s, g in zip(songs, group_of) if g in valid_groups]
    return SONG_SEPARATOR.join(train) + "\n", SONG_SEPARATOR.join(valid) + "\n"


def main() -> None:
    here = Path(__file__).parent
    train, valid = split((here / "songs.txt").read_text(encoding="utf-8"))
    edition1_valid = (here / "valid-edition1.txt").read_text(encoding="utf-8").strip("\n").split(SONG_SEPARATOR)
    valid_songs = set(valid.strip("\n").split(SONG_SEPARATOR))
    missing = [s.split("\n", 1)[0] for s in edition1_valid if s not in valid_songs]
    if missing:
        raise SystemExit(f"edition 1's validation songs would train: {missing[:5]}")
    (here / "train.txt").write_text(train, encoding="utf-8")
    (here / "valid.txt").write_text(valid, encoding="utf-8")
    print(f"train.txt: {train.count('SONG:')} songs, {len(train):,} characters; "
          f"valid.txt: {valid.count('SONG:')} songs, {len(valid):,} characters")


if __name__ == "__main__":
    main()
