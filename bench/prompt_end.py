"""The next word after a prompt that ends in a space, as a writer leaves the text before the next word.

    python bench/prompt_end.py [--model checkpoints/songs-lstm] [--text data/songs/valid.txt] [--cases 200]
                               [--seed 0] [--threads 2]

Each case: a word of the text that follows a space (not in a `SONG:` title line), drawn at random with `--seed`
from the songs of the text (separated by two blank lines), and up to 2,000 characters of its song before it. The
prompt is that text up to the word, its space included; `/v1/predict`'s computation (model.prediction.predict,
in process) lists its 10 likeliest next words, and a hit is the word among them, case aside. Prints the hit rate
with the space and with the space removed (the same texts, which may also go on with punctuation).

Run it with an earlier version of the package first on the path (`PYTHONPATH=DIR`, where DIR holds a `lyricist`
folder mapping `model` and the others of that commit) to compare versions: docs/model.md gives the figure from
before prompts that end in a space were read as the text they are.
"""

from __future__ import annotations

import argparse
import random
import re
import shlex
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
SEPARATOR = "\n\n\n"
LEFT_CHARS = 2000
AFTER_SPACE = re.compile(r"(?<= )[A-Za-z']+")


def draw_cases(text: str, count: int, seed: int) -> list[tuple[str, str]]:
    """(prompt ending in a space, the word that follows it) for `count` random cases."""
    songs = [song for song in text.split(SEPARATOR) if song.strip()]
    rng = random.Random(seed)
    cases = []
    while len(cases) < count:
        song = rng.choice(songs)
        words = [m for m in AFTER_SPACE.finditer(song)
                 if not song[song.rfind("\n", 0, m.start()) + 1:].startswith("SONG:")]
        if words:
            word = rng.choice(words)
            cases.append((song[max(0, word.start() - LEFT_CHARS):word.start()], word.group()))
    return cases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=str(ROOT / "checkpoints" / "songs-lstm"), help="a checkpoint directory")
    parser.add_argument("--text", default=str(ROOT / "data" / "songs" / "valid.txt"),
                        help="songs separated by two blank lines, none of them trained on")
    parser.add_argument("--cases", type=int, default=200, help="words drawn")
    parser.add_argument("--seed", type=int, default=0, help="draws the words")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from lyricist.model import load_checkpoint
    from lyricist.model.prediction import predict
    from lyricist.model.prompt_cache import PromptCache

    checkpoint = load_checkpoint(args.model)
    model, tokenizer = checkpoint.model.eval(), checkpoint.tokenizer
    prompts = PromptCache(model)
    cases = draw_cases(Path(args.text).read_text(encoding="utf-8"), args.cases, args.seed)
    hits = {"the prompt with its space": 0, "the space removed": 0}
    for prompt, word in cases:
        for reading, text in zip(hits, (prompt, prompt.rstrip(" "))):
            listed = predict(model, tokenizer, text, 10, prompts=prompts).distribution
            hits[reading] += word.lower() in {w.lower() for w, _ in listed}
    print(f"cases: {len(cases)} (seed {args.seed}) from {args.text}, model {checkpoint.name}, "
          f"package {Path(sys.modules['lyricist.model'].__file__).parent}")
    for reading, found in hits.items():
        print(f"the next word in /v1/predict's top 10, {reading}: {found}/{len(cases)} = {found / len(cases):.1%}")
    print("reproduce: python " + " ".join(shlex.quote(a) for a in ["bench/prompt_end.py", *sys.argv[1:]]))


if __name__ == "__main__":
    main()
