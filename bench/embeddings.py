"""What reading a request's texts side by side buys `/v1/embeddings`, against reading them one at a time.

    python bench/embeddings.py [--model checkpoints/songs-lstm] [--text data/songs/valid.txt] [--rounds 3]
                               [--threads 2]

For each request shape (one line, one stanza, one song, one text of 18,000 characters; 8 lines, 64 stanzas, 10
texts of 18,000 characters: the largest body the default limits accept), the same computation the endpoint makes
(model.embeddings.text_vectors, in process) is timed two ways, alternating round by round: all the request's texts
at once, as the service reads them, and each text as a request of its own. A lone text is read alone either way.
Prints the median of each and their ratio, and whether the vectors agree (a text read beside others has other
bits in the last places than read alone). Run on an otherwise idle machine; only the ratios measured in one run
compare (this machine's speed drifts from minute to minute).
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=str(ROOT / "checkpoints" / "songs-lstm"))
    parser.add_argument("--text", default=str(ROOT / "data" / "songs" / "valid.txt"))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from lyricist.model import load_checkpoint
    from lyricist.model.embeddings import text_vectors
    from lyricist.model.steps import run_to_end

    checkpoint = load_checkpoint(args.model)
    model, tokenizer = checkpoint.model.eval(), checkpoint.tokenizer
    text = Path(args.text).read_text()
    shapes = {
        "one line (40 characters)": [text[1000:1040]],
        "one stanza (300 characters)": [text[2000:2300]],
        "one song (3,000 characters)": [text[5000:8000]],
        "one text of 18,000 characters": ["la " * 6000],
        "8 lines of 40 characters": [text[i * 40:(i + 1) * 40] for i in range(8)],
        "64 stanzas of 300 characters": [text[i * 300:(i + 1) * 300] for i in range(64)],
        "10 texts of 18,000 characters": ["la " * 6000] * 10,
    }
    print(f"model {Path(args.model).name}, {args.threads} threads, {args.rounds} rounds, median seconds a request")
    print(f"{'request':32s} {'side by side':>13s} {'one at a time':>14s} {'ratio':>6s}  largest difference")
    for name, texts in shapes.items():
        took: dict[str, list[float]] = {"together": [], "apart": []}
        for round_ in range(args.rounds):
            for way in (("together", "apart") if round_ % 2 == 0 else ("apart", "together")):
                started = time.perf_counter()
                if way == "together":
                    together = run_to_end(text_vectors(model, tokenizer, texts))
                else:
                    apart = [run_to_end(text_vectors(model, tokenizer, [t]))[0] for t in texts]
                took[way].append(time.perf_counter() - started)
        difference = max(float((a - b).abs().max()) for (a, _), (b, _) in zip(together, apart))
        side, alone = statistics.median(took["together"]), statistics.median(took["apart"])
        print(f"{name:32s} {side:13.3f} {alone:14.3f} {alone / side:5.2f}x  {difference:.1e}", flush=True)
    print("reproduce: python bench/embeddings.py " + shlex.join(sys.argv[1:]))


if __name__ == "__main__":
    main()
