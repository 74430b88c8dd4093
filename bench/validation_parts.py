"""Where a model's validation figure comes from: the two plays of the tinyshakespeare validation split.

The split (the last 10% of the corpus) is the end of *The Taming of the Shrew*,
whose beginning is in the training text, then the start of *The Tempest*, a
play absent from training. The text is scored once, in one stream as
`lyricist eval` does, and each piece's loss is credited to the part where its
first character lies: each play's speaker lines ("PROSPERO:", "Boatswain:";
none of The Tempest's speakers speaks in the training text) and the rest.

    python bench/validation_parts.py checkpoints/shakespeare-lstm [other checkpoints ...] [--dynamic]

With --dynamic each checkpoint is also scored by dynamic evaluation (its stored
settings and statistics, as `lyricist eval --dynamic`), in a row of its own.
"""

from __future__ import annotations

import argparse
import bisect
import itertools
import re
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lyricist.model import load_checkpoint  # noqa: E402
from lyricist.model.dynamic_eval import DynamicEvaluator  # noqa: E402
from lyricist.model.scoring import score_text  # noqa: E402
from lyricist.training.data import read_corpus  # noqa: E402

CORPUS = ROOT / "data" / "tinyshakespeare" / "input.txt"
TEMPEST_OPENS = "\nMaster:\nBoatswain!\n"  # the first speech of The Tempest
SPEAKER_LINE = re.compile(r"^[A-Z][A-Za-z'-]*(?: [A-Z][A-Za-z'-]*){0,2}:$", re.M)  # "PROSPERO:", "First Citizen:"
SPEAKERS_SHOWN = 5
PARTS = ("Shrew speakers", "Shrew rest", "Tempest speakers", "Tempest rest")


def parts(directory: str, text: str, dynamic: bool = False) -> tuple[dict[str, tuple[float, int]], dict[str, list]]:
    """(nats/char, characters) of the whole text and of each part: the two plays, each split into its
    speaker lines and the rest; and the nats of each of The Tempest's speaker lines, by speaker, in order.
    `dynamic`: scored by dynamic evaluation with the checkpoint's settings."""
    checkpoint = load_checkpoint(directory)
    if dynamic:
        score = DynamicEvaluator.from_checkpoint(checkpoint).score(text)
    else:
        score = score_text(checkpoint.model, checkpoint.tokenizer, text)
    lengths = [len(checkpoint.tokenizer.decode([piece])) for piece in score.token_ids]
    if sum(lengths) != len(text):
        raise SystemExit(f"{directory}: its pieces do not spell the text one by one; cannot credit them to parts")
    cut = text.index(TEMPEST_OPENS) + 1
    speaker = bytearray(len(text))
    for line in SPEAKER_LINE.finditer(text):
        speaker[line.start() : line.end() + 1] = b"\1" * (line.end() + 1 - line.start())

    def part(position: int) -> str:
        return ("Shrew" if position < cut else "Tempest") + (" speakers" if speaker[position] else " rest")

    nll = dict.fromkeys(PARTS, 0.0)
    starts = list(itertools.accumulate(lengths, initial=0))[:-1]
    logprobs = score.logprobs.tolist()
    for start, logprob in zip(starts, logprobs):
        nll[part(start)] -= logprob
    speeches: dict[str, list[float]] = {}
    for line in SPEAKER_LINE.finditer(text, cut):
        first, end = bisect.bisect_left(starts, line.start()), bisect.bisect_left(starts, line.end() + 1)
        speeches.setdefault(line.group(), []).append(-sum(logprobs[first:end]))
    chars = dict.fromkeys(PARTS, 0)
    for position in range(len(text)):
        chars[part(position)] += 1
    figures = {name: (nll[name] / chars[name], chars[name]) for name in PARTS}
    figures["all"] = (score.nll / len(text), len(text))
    rest = len(text) - chars["Tempest speakers"]
    figures["all but the Tempest's speakers"] = ((score.nll - nll["Tempest speakers"]) / rest, rest)
    return figures, speeches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="+")
    parser.add_argument("--dynamic", action="store_true", help="add a row scored by dynamic evaluation")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    text = read_corpus(CORPUS).validation_text
    print(f"validation split: {len(text):,} characters")
    columns = ("all", *PARTS, "all but the Tempest's speakers")
    rows, speeches = {}, {}
    for directory in args.checkpoints:
        rows[f"{directory}, static"], speeches[f"{directory}, static"] = parts(directory, text)
        if args.dynamic:
            row = f"{directory}, dynamic evaluation"
            rows[row], speeches[row] = parts(directory, text, dynamic=True)
    sizes = next(iter(rows.values()))
    print("| checkpoint | " + " | ".join(f"{name} ({sizes[name][1]:,} chars)" for name in columns) + " |")
    print("|---" * (len(columns) + 1) + "|")
    for row, figures in rows.items():
        print(f"| {row} | " + " | ".join(f"{figures[name][0]:.4f}" for name in columns) + " |")
    print("\nThe Tempest's most frequent speakers: nats for the whole line (name, colon, newline), "
          "at its first, second and fifth speech, and the mean over all of them")
    names = sorted(next(iter(speeches.values())).items(), key=lambda item: -len(item[1]))[:SPEAKERS_SHOWN]
    print("| checkpoint | " + " | ".join(f"{name} ({len(lines)} speeches)" for name, lines in names) + " |")
    print("|---" * (len(names) + 1) + "|")
    for row, by_speaker in speeches.items():
        cells = []
        for name, _ in names:
            lines = by_speaker[name]
            cells.append(f"{lines[0]:.1f}, {lines[1]:.1f}, {lines[4]:.1f}; {sum(lines) / len(lines):.1f}")
        print(f"| {row} | " + " | ".join(cells) + " |")
    flags = " --dynamic" if args.dynamic else ""
    print(f"nats/char; reproduce: python bench/validation_parts.py {' '.join(args.checkpoints)}{flags}")


if __name__ == "__main__":
    main()
