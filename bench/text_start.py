"""What the model makes of the first pieces of a text: a song's lyrics read from the start marker, against the
same lyrics read after what the training text puts before a song.

    python bench/text_start.py [--model checkpoints/songs-lstm] [--text data/songs/valid.txt] [--songs 100]

The training text is one stream: the start marker occurs once in it, and each song follows the one before it
after the separator (two blank lines) and its `SONG:` title line. A text given to the service is read from the
start marker, as training never read a song. For each of the first `--songs` songs of the text, the title line is
dropped (what a songwriter types is lyrics) and the lyrics' first 128 pieces are scored (the continuous cache as
shipped) in four readings: from the marker alone, and after the marker and one of three contexts: a line break,
the separator, a title line. Prints the nats per piece of pieces 1-8, 9-32 and 33-128 of each reading, and the
first song's likeliest first words from the marker alone and after the separator.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
SEPARATOR = "\n\n\n"
SPANS = ((0, 8), (8, 32), (32, 128))
CONTEXTS = {"the start marker alone": "", "a line break": "\n", "the separator": SEPARATOR,
            "a title line": "SONG: Song\n"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=str(ROOT / "checkpoints" / "songs-lstm"))
    parser.add_argument("--text", default=str(ROOT / "data" / "songs" / "valid.txt"))
    parser.add_argument("--songs", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from lyricist.model import load_checkpoint

    checkpoint = load_checkpoint(args.model)
    model, tokenizer = checkpoint.model.eval(), checkpoint.tokenizer
    songs = [song for song in Path(args.text).read_text(encoding="utf-8").split(SEPARATOR) if song.strip()]
    lyrics = [song.split("\n", 1)[1] if song.startswith("SONG:") else song for song in songs[:args.songs]]
    nats = {name: [0.0] * len(SPANS) for name in CONTEXTS}
    counts = [0] * len(SPANS)
    with torch.inference_mode():
        for text in lyrics:
            ids = tokenizer.encode(text.strip("\n"))[:SPANS[-1][1]]
            for i, (a, b) in enumerate(SPANS):
                counts[i] += len(ids[a:b])
            for name, context in CONTEXTS.items():
                before = [tokenizer.bos_id] + tokenizer.encode(context)
                logits, _ = model.read(model.tokens(before + ids), every_piece=True)
                logp = -F.cross_entropy(logits[len(before) - 1:-1].double(), model.tokens(ids), reduction="none")
                for i, (a, b) in enumerate(SPANS):
                    nats[name][i] -= float(logp[a:b].sum())
    print(f"{len(lyrics)} songs of {args.text} without their title lines, model {checkpoint.name}; nats per piece:")
    print(f"{'read after':<24}" + "".join(f"{f'pieces {a + 1}-{b}':>16}" for a, b in SPANS))
    for name in CONTEXTS:
        print(f"{name:<24}" + "".join(f"{n / max(c, 1):>16.3f}" for n, c in zip(nats[name], counts)))
    for name in ("the start marker alone", "the separator"):
        before = [tokenizer.bos_id] + tokenizer.encode(CONTEXTS[name])
        with torch.inference_mode():
            logits, _ = model.read(model.tokens(before))
        top = torch.topk(logits[0].float(), 8).indices.tolist()
        print(f"likeliest first pieces after {name}: {[tokenizer.decode([t]) for t in top]}")
    print("reproduce: python " + " ".join(shlex.quote(a) for a in ["bench/text_start.py", *sys.argv[1:]]))


if __name__ == "__main__":
    main()
