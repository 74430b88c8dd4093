"""What the model makes of the first pieces of a text: a song's lyrics read as served (after the checkpoint's start
context), from the start marker alone, and after what the training text puts before a song.

    python bench/text_start.py [--model checkpoints/songs-lstm] [--text data/songs/valid.txt] [--texts 100]
                               [--keep-titles]
    python bench/text_start.py --model checkpoints/shakespeare-lstm --text data/tinyshakespeare/input.txt \
                               --separator '\n\n' --from 0.9 --texts 200

The training text is one stream: the start marker occurs once in it, and each song follows the one before it
after the separator (two blank lines) and its `SONG:` title line, so the marker alone reads as the middle of a
text; a checkpoint can name a context that every text the service reads follows (docs/model.md). The text is cut
at `--separator` (from `--from`, a fraction of it: the Shakespeare model's validation part is its last 10%), and
of each of the first `--texts` parts, the `SONG:` title line is dropped (what a songwriter types is lyrics;
`--keep-titles` keeps it) and the first 128 pieces are scored (the continuous cache as shipped) as served
(`lyricist start` shows the checkpoint's context), from the marker alone, and after the marker and each of these
contexts: a line break, the separator, and where the parts have titles, a title line and the separator with a
title line (what every song of the training text follows). Prints the nats per piece of pieces 1-8, 9-32 and 33-128 of each reading, and the
likeliest first pieces from the marker alone and as served.
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
SEPARATOR = "\n\n\n"
TITLE = "SONG: Song\n"
SPANS = ((0, 8), (8, 32), (32, 128))
AS_SERVED = "as served"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=str(ROOT / "checkpoints" / "songs-lstm"))
    parser.add_argument("--text", default=str(ROOT / "data" / "songs" / "valid.txt"))
    parser.add_argument("--texts", type=int, default=100)
    parser.add_argument("--separator", default=r"\n\n\n", help=r"between two texts, \n for a line break")
    parser.add_argument("--keep-titles", action="store_true", help="keep the songs' title lines")
    parser.add_argument("--from", dest="start", type=float, default=0.0, help="where to begin, a fraction of it")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from lyricist.model import load_checkpoint

    checkpoint = load_checkpoint(args.model)
    served, tokenizer = checkpoint.model.eval(), checkpoint.tokenizer
    unstarted = load_checkpoint(args.model).model.eval()  # the same weights, every text read from the marker alone
    unstarted.config = dataclasses.replace(unstarted.config, start=[])
    separator = args.separator.replace(r"\n", "\n")
    whole = Path(args.text).read_text(encoding="utf-8")
    parts = whole[int(len(whole) * args.start):].split(separator)
    parts = [part for part in parts[1 if args.start else 0:] if part.strip()]  # past --from: the first is cut
    titled = any(part.startswith("SONG:") for part in parts[:args.texts])
    lyrics = [part.split("\n", 1)[1] if part.startswith("SONG:") and not args.keep_titles else part
              for part in parts[:args.texts]]
    contexts = {AS_SERVED: "", "the start marker alone": "", "a line break": "\n", "the separator": separator,
                **({"a title line": TITLE, "the separator and a title": separator + TITLE} if titled else {})}
    models = {name: served if name == AS_SERVED else unstarted for name in contexts}
    nats = {name: [0.0] * len(SPANS) for name in contexts}
    counts = [0] * len(SPANS)
    with torch.inference_mode():
        for text in lyrics:
            ids = tokenizer.encode(text.strip("\n"))[:SPANS[-1][1]]
            for i, (a, b) in enumerate(SPANS):
                counts[i] += len(ids[a:b])
            for name, context in contexts.items():
                model, before = models[name], [tokenizer.bos_id] + tokenizer.encode(context)
                logits, _ = model.read(model.tokens(before + ids), every_piece=True)
                logp = -F.cross_entropy(logits[len(before) - 1:-1].double(), model.tokens(ids), reduction="none")
                for i, (a, b) in enumerate(SPANS):
                    nats[name][i] -= float(logp[a:b].sum())
    shown = repr(checkpoint.start_text) if checkpoint.start_text is not None else "none"
    untitled = " with their title lines" if args.keep_titles else " without their title lines" if titled else ""
    print(f"{len(lyrics)} texts of {args.text}{untitled}, model {checkpoint.name} (start context: {shown}); "
          "nats per piece:")
    print(f"{'read after':<28}" + "".join(f"{f'pieces {a + 1}-{b}':>16}" for a, b in SPANS))
    for name in contexts:
        print(f"{name:<28}" + "".join(f"{n / max(c, 1):>16.3f}" for n, c in zip(nats[name], counts)))
    for name in ("the start marker alone", AS_SERVED):
        with torch.inference_mode():
            logits, _ = models[name].read(served.tokens([tokenizer.bos_id]))
        top = torch.topk(logits[0].float(), 8).indices.tolist()
        print(f"likeliest first pieces after {name}: {[tokenizer.decode([t]) for t in top]}")
    print("reproduce: python " + " ".join(shlex.quote(a) for a in ["bench/text_start.py", *sys.argv[1:]]))


if __name__ == "__main__":
    main()
