"""The song's memory measured (issue 27): the copy-distance curve, and what the memory costs a stream.

    python bench/memory.py --model checkpoints/songs-lstm [--model OTHER ...] [--text data/songs/valid.txt]
                           [--plot docs/memory.png] [--songs N]

**Copy distance.** Each song of the text is scored alone (as /v1/score does, model.scoring.score_text). For each
piece, its distance is how many pieces back the same piece was last read in the song (none: "first time"); the
mean loss of the pieces at each distance (log-spaced bins) shows how well a model uses what it read that long
ago: an LSTM alone forgets (the lab's vanishing gradients), the cache and attention read the past back. Each
model passed is one curve; a checkpoint with a tuned cache is measured with it on and off.

**Cost.** One stream's tokens/s through the engine (in process, every core), with the memory and with it off
(the same weights: attention cannot be turned off, so the cost of attention is against the model before it).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import math
import shlex
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
SEPARATOR = "\n\n\n"
BINS = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 10**9]


def bin_of(distance: int | None) -> str:
    if distance is None:
        return "first"
    for low, high in zip(BINS, BINS[1:]):
        if low <= distance < high:
            return f"{low}-{high - 1}" if high < 10**9 else f">={low}"
    return f">={BINS[-2]}"


def distances(ids: list[int]) -> list[int | None]:
    """For each piece of `ids` (after the start marker), how far back the same piece was last read."""
    last: dict[int, int] = {}
    found = []
    for position, piece in enumerate(ids):
        if position:
            found.append(position - last[piece] if piece in last else None)
        last[piece] = position
    return found


def curve(checkpoint, songs: list[str]) -> dict[str, tuple[float, int]]:
    from lyricist.model.scoring import score_text

    totals: dict[str, list[float]] = {}
    for song in songs:
        score = score_text(checkpoint.model, checkpoint.tokenizer, song)
        ids = [checkpoint.tokenizer.bos_id, *score.token_ids]
        for distance, logprob in zip(distances(ids), score.logprobs.tolist()):
            entry = totals.setdefault(bin_of(distance), [0.0, 0])
            entry[0] -= logprob
            entry[1] += 1
    return {name: (nats / count, count) for name, (nats, count) in totals.items()}


def stream_rate(checkpoint, tokens: int = 400) -> float:
    from lyricist.app.engine import GenerationRequest, ModelEngine
    from lyricist.model import SamplingParams

    engine = ModelEngine(checkpoint)
    engine.start()
    try:
        async def go():
            await engine.submit(GenerationRequest("SONG: A\n", 20, SamplingParams(seed=0))).result()  # warm
            started = time.perf_counter()
            await engine.submit(GenerationRequest("SONG: A\n", tokens, SamplingParams(seed=1))).result()
            return tokens / (time.perf_counter() - started)
        return asyncio.run(go())
    finally:
        engine.stop()


def without_cache(checkpoint):
    copy = dataclasses.replace(checkpoint)
    model = type(checkpoint.model)(dataclasses.replace(checkpoint.model.config,
                                                       cache=type(checkpoint.model.config.cache)()))
    model.load_state_dict(checkpoint.model.state_dict())
    return dataclasses.replace(copy, model=model.eval())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, action="append", required=True)
    parser.add_argument("--text", type=Path, default=ROOT / "data" / "songs" / "valid.txt")
    parser.add_argument("--songs", type=int, default=0, help="the first N songs only (0: all)")
    parser.add_argument("--plot", type=Path, default=None)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    from lyricist.model import load_checkpoint

    torch.set_num_threads(args.threads)
    songs = [s for s in args.text.read_text(encoding="utf-8").strip("\n").split(SEPARATOR) if s.strip()]
    songs = songs[: args.songs] if args.songs else songs
    print(f"reproduce: python bench/memory.py {' '.join(shlex.quote(a) for a in sys.argv[1:])}")
    print(f"text: {args.text}, {len(songs)} songs, each scored alone\n")
    curves, rates = {}, {}
    for path in args.model:
        checkpoint = load_checkpoint(path)
        c = checkpoint.model.config
        variants = [(checkpoint, "")]
        if c.cache_on:
            variants = [(without_cache(checkpoint), " (cache off)"), (checkpoint, " (cache on)")]
        for variant, suffix in variants:
            name = f"{path.name}{' +attention ' + str(c.attention.window) if c.attention.window else ''}{suffix}"
            curves[name] = curve(variant, songs)
            rates[name] = stream_rate(variant)
            print(f"{name}: one stream {rates[name]:.0f} tokens/s")
    names = [bin_of(None)] + [bin_of(low) for low in BINS[:-1]]
    names = [n for n in dict.fromkeys(names) if any(n in c for c in curves.values())]
    print("\nmean loss (nats) of a piece by how far back it was last read in its song")
    print(f"{'distance':<10}" + "".join(f" | {name[:28]:>28}" for name in curves) + " | pieces")
    for bin_name in names:
        count = next(c[bin_name][1] for c in curves.values() if bin_name in c)
        print(f"{bin_name:<10}" + "".join(f" | {c.get(bin_name, (math.nan, 0))[0]:>28.3f}" for c in curves.values())
              + f" | {count:,}")
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(8, 4.5))
        shown = [n for n in names if n != "first"]
        for name, values in curves.items():
            ax.plot(range(len(shown)), [values.get(n, (math.nan, 0))[0] for n in shown], marker="o", label=name)
        ax.set_xticks(range(len(shown)), shown, rotation=45)
        ax.set_xlabel("pieces since the same piece was last read in the song")
        ax.set_ylabel("mean loss of the piece (nats)")
        ax.set_title("Copy distance: what each model makes of what it read before")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(args.plot, dpi=110)
        print(f"\nplot: {args.plot}")


if __name__ == "__main__":
    main()
