"""How much a song's repeated lines cost the model, against the lines heard for the first time (issue 27).

    python bench/refrains.py [--model checkpoints/songs-lstm] [--text data/songs/valid.txt] [--adapt]

Each song of the text (songs are separated by two blank lines) is scored alone, as `/v1/score` scores it (the
same computation, in process: model.scoring.score_text; `--adapt`: dynamic evaluation, as `"adapt": true`).
Each piece's cost goes to the line in which the piece starts; a line's cost is its pieces' nats over its
characters (its line break included). A line is "heard before" when its text — lowercase letters, apostrophes and
spaces, at least 8 of them — appeared earlier in the same song; otherwise "heard first". Prints the nats per
character of each kind, over all songs, and how many lines and characters each has.
"""

from __future__ import annotations

import argparse
import bisect
import re
import shlex
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
SEPARATOR = "\n\n\n"


def line_key(line: str) -> str:
    return " ".join(re.sub(r"[^a-z' ]", "", line.lower()).split())


def repeated_lines(song: str) -> list[tuple[int, int, bool]]:
    """(start, end, heard before) of each non-empty line of `song`; end includes its line break."""
    spans, seen, at = [], set(), 0
    for line in song.split("\n"):
        end = min(at + len(line) + 1, len(song))
        key = line_key(line)
        if line.strip():
            counted = len(key.replace(" ", "")) >= 8
            spans.append((at, end, counted and key in seen))
            if counted:
                seen.add(key)
        at += len(line) + 1
    return spans


def piece_starts(tokenizer, ids: list[int]) -> list[int]:
    """The character offset at which each piece's text starts (a piece that completes no character starts where
    the next character will)."""
    starts, at = [], 0
    for token in tokenizer.token_texts(ids):
        starts.append(at)
        at += len(token.text)
    return starts


def split_costs(score, tokenizer, song: str) -> dict[bool, list[float]]:
    """{heard before: [nats, chars]} for one scored song. Pieces starting on a blank line count nowhere (nor do
    its characters)."""
    spans = repeated_lines(song)
    totals = {True: [0.0, 0], False: [0.0, 0]}
    starts = [start for start, _, _ in spans]
    for at, logprob in zip(piece_starts(tokenizer, score.token_ids), score.logprobs.tolist()):
        index = bisect.bisect_right(starts, at) - 1
        if index >= 0 and at < spans[index][1]:
            totals[spans[index][2]][0] -= logprob
    for start, end, before in spans:
        totals[before][1] += end - start
    return totals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=ROOT / "checkpoints" / "songs-lstm")
    parser.add_argument("--text", type=Path, default=ROOT / "data" / "songs" / "valid.txt")
    parser.add_argument("--adapt", action="store_true", help="dynamic evaluation, as /v1/score's adapt")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    from lyricist.model import load_checkpoint
    from lyricist.model.scoring import score_text

    torch.set_num_threads(args.threads)
    checkpoint = load_checkpoint(args.model)
    model, tokenizer = checkpoint.model.eval(), checkpoint.tokenizer
    evaluator = None
    if args.adapt:
        from lyricist.model.dynamic_eval import DynamicEvaluator

        evaluator = DynamicEvaluator.from_checkpoint(checkpoint)
    songs = [s for s in args.text.read_text(encoding="utf-8").strip("\n").split(SEPARATOR) if s.strip()]
    totals = {True: [0.0, 0], False: [0.0, 0]}
    lines = {True: 0, False: 0}
    started = time.perf_counter()
    for song in songs:
        score = evaluator.score(song) if evaluator else score_text(model, tokenizer, song)
        for before, (nats, chars) in split_costs(score, tokenizer, song).items():
            totals[before][0] += nats
            totals[before][1] += chars
        for _, _, before in repeated_lines(song):
            lines[before] += 1
    print(f"reproduce: python bench/refrains.py {' '.join(shlex.quote(a) for a in sys.argv[1:])}")
    print(f"model {args.model}, text {args.text} ({len(songs)} songs), {'dynamic' if args.adapt else 'static'}, "
          f"{time.perf_counter() - started:.0f} s")
    for before, name in ((True, "heard before in the song"), (False, "heard first")):
        nats, chars = totals[before]
        print(f"lines {name:<25} {nats / max(chars, 1):.4f} nats/char ({lines[before]:,} lines, {chars:,} characters)")
    all_nats, all_chars = totals[True][0] + totals[False][0], totals[True][1] + totals[False][1]
    print(f"all lines {'':<25} {all_nats / all_chars:.4f} nats/char")


if __name__ == "__main__":
    main()
