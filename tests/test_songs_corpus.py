"""The songs corpus as shipped: its split is the split script's output, and edition 1's validation songs (the
held-out text the songs models have always been compared on) stay out of training with every version of them."""

import hashlib
import importlib.util
import json
import re
from collections import Counter, defaultdict

from .helpers import ROOT

SONGS = ROOT / "data" / "songs"
SEPARATOR = "\n\n\n"


def songs_of(name: str) -> list[str]:
    return (SONGS / name).read_text(encoding="utf-8").strip("\n").split(SEPARATOR)


def load_split():
    spec = importlib.util.spec_from_file_location("songs_split", SONGS / "split.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_shipped_split_is_the_split_scripts_output():
    train, valid = load_split().split((SONGS / "songs.txt").read_text(encoding="utf-8"))
    assert (SONGS / "train.txt").read_text(encoding="utf-8") == train
    assert (SONGS / "valid.txt").read_text(encoding="utf-8") == valid


def test_songs_txt_is_edition_1_then_the_new_books_as_the_stats_say():
    text = (SONGS / "songs.txt").read_bytes()
    edition1 = (SONGS / "edition1.txt").read_bytes()
    stats = json.loads((SONGS / "stats.json").read_text())
    assert text.startswith(edition1.rstrip(b"\n") + b"\n\n\n")
    assert stats["sha256"] == hashlib.sha256(text).hexdigest()
    assert stats["total_bytes"] == len(text) >= 5_000_000
    assert stats["songs"] == len(songs_of("songs.txt"))
    assert sum(source["bytes"] for source in stats["sources"].values()) == len(text)


def test_every_song_keeps_the_format():
    for song in songs_of("songs.txt"):
        title, _, body = song.partition("\n")
        assert title.startswith("SONG: ") and title[6:].strip()
        assert body.strip() and "\n\n\n" not in body
        assert all(line == line.strip() for line in body.split("\n"))


def test_edition_1_validation_songs_and_their_versions_stay_out_of_training():
    valid = set(songs_of("valid.txt"))
    edition1_valid = songs_of("valid-edition1.txt")
    assert all(song in valid for song in edition1_valid)

    # Read independently of split.py's own rule (3-grams): whole lines. A version of a ballad repeats many of its
    # lines; here no training song may hold a fifth of the long lines of an edition-1 validation song.
    def long_lines(song):
        return {re.sub(r"[^a-z ]", "", line.lower()).strip() for line in song.split("\n")[1:] if len(line) >= 20}

    songs_by_line = defaultdict(set)
    train = songs_of("train.txt")
    for index, song in enumerate(train):
        for line in long_lines(song):
            songs_by_line[line].add(index)
    for song in edition1_valid:
        lines = long_lines(song)
        shared = Counter(index for line in lines for index in songs_by_line.get(line, ()))
        if shared:
            index, count = shared.most_common(1)[0]
            assert count / len(lines) < 0.2, (song.split("\n")[0], train[index].split("\n")[0])
