"""`/v1/predict` with constraints after lyrics of different lengths: what the page's chart asks with its filters.

    python bench/constrained_predict.py [--model checkpoints/songs-lstm] [--cases 20] [--seed 0]

For `--cases` random places at the end of a line of the songs' validation split, and for each length of lyrics
before it (300, 1,000 and 3,000 characters, cut at a line's start), it asks what the chart asks with a filter
on: the next word of one syllable, of two, and one rhyming with the end word of the last line
(`tasks.predict_words`, as the route calls it, in this process). The lyrics are read first and each word set
searched once before (the page has read them by the time a filter is set; the first search of a set lays out
its paths, a cost of its own), so the times are the searches'. Prints, per length, the p50 and p90 time, the
mean model rows and the share of answers that are exact, and the process's peak memory.

`--reference` also searches each set with 16 times the rows and a third of the tolerance (untimed) and prints
the share of answers whose top 10 are those words in that order: what an answer that stops at its row budget
(`exact` false) still gets right.
"""

from __future__ import annotations

import argparse
import random
import re
import resource
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
SEPARATOR = "\n\n\n"
LENGTHS = (300, 1000, 3000)
END_WORD = re.compile(r"([A-Za-z']+)\W*$")


def draw_places(text: str, count: int, seed: int) -> list[tuple[str, str]]:
    """(the text before a line, the end word of the line before it) for `count` places with 3,000 characters
    of the same song before them."""
    songs = [song for song in text.split(SEPARATOR) if len(song) > max(LENGTHS) + 200]
    rng = random.Random(seed)
    places = []
    while len(places) < count:
        song = rng.choice(songs)
        breaks = [m.end() for m in re.finditer("\n", song) if m.end() > max(LENGTHS)]
        if not breaks:
            continue
        end = rng.choice(breaks)
        found = END_WORD.search(song[:end].rstrip("\n").rsplit("\n", 1)[-1])
        if found:
            places.append((song[:end], found.group(1)))
    return places


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=str(ROOT / "checkpoints" / "songs-lstm"))
    parser.add_argument("--text", default=str(ROOT / "data" / "songs" / "valid.txt"))
    parser.add_argument("--cases", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--reference", action="store_true", help="compare each top 10 with a far larger search")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    sys.path.insert(0, str(ROOT))
    from lyricist.model import load_checkpoint
    from lyricist.model.prompt_cache import PromptCache
    from lyricist.model.steps import run_to_end
    from lyricist.songwriting import constrained, tasks

    checkpoint = load_checkpoint(args.model)
    model, tokenizer = checkpoint.model.eval(), checkpoint.tokenizer
    tasks.prepare(tokenizer)
    places = draw_places(Path(args.text).read_text(encoding="utf-8"), args.cases, args.seed)

    def ask(prompt: str, rhymes_with: str | None, syllables: int | None, prompts: PromptCache):
        return run_to_end(tasks.predict_words(model, tokenizer, prompt, 10, 1.0, rhymes_with, "perfect", syllables,
                                              prompts=prompts)).prediction

    def reference_top(prompt: str, rhymes_with: str | None, syllables: int | None, prompts: PromptCache):
        words = tasks.qualifying_words(rhymes_with, "perfect", syllables)
        found = run_to_end(constrained.constrained_steps(model, tokenizer, prompt, words, 10, 1.0,
                                                         constrained.TOLERANCE / 3, 0.0, 16 * constrained.MAX_ROWS,
                                                         prompts))
        return [word for word, _ in found.distribution]

    for _, end_word in places:  # every word set's first search, after a short prompt
        for rhymes_with, syllables in ((None, 1), (None, 2), (end_word, None)):
            ask("SONG: A\n", rhymes_with, syllables, PromptCache(model))
    print(f"reproduce: python {' '.join(shlex.quote(a) for a in ['bench/constrained_predict.py', *sys.argv[1:]])}")
    print(f"{args.cases} places (seed {args.seed}) from {args.text}, model {checkpoint.name}, {args.threads} threads")
    print(f"{'lyrics before':>14} | {'p50':>6} | {'p90':>6} | mean rows | exact"
          + (" | top 10 as the larger search's" if args.reference else ""))
    for length in LENGTHS:
        seconds, rows, exact, agree = [], [], 0, 0
        for before, end_word in places:
            prompt = before[-length:]
            prompt = prompt[prompt.index("\n") + 1:]
            prompts = PromptCache(model)
            run_to_end(prompts.reader(tokenizer.encode_prompt(prompt)[0]).steps())  # the page has read it
            for rhymes_with, syllables in ((None, 1), (None, 2), (end_word, None)):
                began = time.perf_counter()
                prediction = ask(prompt, rhymes_with, syllables, prompts)
                seconds.append(time.perf_counter() - began)
                rows.append(prediction.rows)
                exact += prediction.exact
                if args.reference:
                    agree += [w for w, _ in prediction.distribution] == reference_top(prompt, rhymes_with, syllables,
                                                                                     prompts)
        ordered = sorted(seconds)
        print(f"{length:>9} chars | {statistics.median(ordered):5.2f}s | {ordered[int(0.9 * (len(ordered) - 1))]:5.2f}s"
              f" | {statistics.mean(rows):9.0f} | {exact / len(seconds):>5.0%}"
              + (f" | {agree / len(seconds):.0%}" if args.reference else ""))
    print(f"peak memory of the process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
