"""Cheap bodies that cost the server dear, each beside a small generation: both times (issue 25, "every request
bounded").

    python bench/hostile.py [--model checkpoints/songs-lstm] [--rounds 2]

Starts the real server on the shipped songs model and, for each body (the longest the default limits accept:
20,000 characters), sends it while a 20-token generation is asked for 0.2 s later, and prints how long the body's
answer took (and its status) and how long the generation took beside it. Goal: the body answered within 5 s, the
generation within 1 s (alone it takes well under 0.1 s).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import sys
import time
from pathlib import Path

import httpx

from processes import ROOT, start_server

CHARS = 19_999  # under LYRICIST_MAX_PROMPT_CHARS (20,000)
SONG = "\n".join(["la la la love"] * (CHARS // 14))
MIDDLE = SONG.index("\n", CHARS // 2)  # the end of a line halfway
BODIES = [
    ("/v1/analyze", {"text": "0" * CHARS}, "20k characters of 0"),
    ("/v1/analyze", {"text": "abc" * (CHARS // 3)}, "one 20k-letter 'word'"),
    ("/v1/analyze", {"text": SONG}, "1,400 lines"),
    ("/v1/score", {"text": "0" * CHARS}, "20k characters of 0"),
    ("/v1/predict", {"prompt": "0" * CHARS, "rhymes_with": "day"}, "20k-character prompt, rhymes_with"),
    ("/v1/predict", {"prompt": "la " * (CHARS // 3)}, "20k-character prompt"),
    ("/v1/lines", {"prompt": "la la la\n" * (CHARS // 9), "syllables": 8, "rhymes_with": "day", "n": 8},
     "20k-character prompt, 8 lines"),
    ("/v1/verse", {"prompt": "", "scheme": "ABABABABABABABAB", "syllables": 12}, "16-line verse"),
    ("/v1/alternatives", {"text": SONG, "start": len(SONG) - 4, "end": len(SONG), "max_words": 4},
     "20k-character song, its last word, up to 4 words"),
    ("/v1/alternatives", {"text": SONG, "start": MIDDLE, "end": MIDDLE, "max_words": 4, "syllables": 24},
     "20k-character song, an insert of 24 syllables in 4 words"),
    ("/v1/alternatives", {"text": "0" * CHARS, "start": CHARS, "end": CHARS}, "after 20k characters of 0"),
    ("/v1/embeddings", {"input": ["la " * 6000] * 10}, "10 texts of 18k characters (the largest body accepted)"),
]


async def beside(base: str, path: str, body: dict) -> tuple[float, int, float]:
    async with httpx.AsyncClient(base_url=base, timeout=300) as client:
        async def hostile() -> tuple[float, int]:
            started = time.perf_counter()
            response = await client.post(path, json=body)
            return time.perf_counter() - started, response.status_code

        async def small() -> float:
            await asyncio.sleep(0.2)
            started = time.perf_counter()
            response = await client.post("/v1/generate", json={"prompt": "SONG: A\n", "max_new_tokens": 20, "seed": 1})
            response.raise_for_status()
            return time.perf_counter() - started

        (seconds, status), generation = await asyncio.gather(hostile(), small())
        return seconds, status, generation


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=ROOT / "checkpoints" / "songs-lstm")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--only", help="the bodies of this path alone (e.g. /v1/alternatives)")
    args = parser.parse_args()
    print(f"reproduce: python bench/hostile.py {' '.join(shlex.quote(a) for a in sys.argv[1:])}; "
          f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    server, base = start_server(args.model, None)
    try:
        alone = []
        for _ in range(3):
            started = time.perf_counter()
            httpx.post(f"{base}/v1/generate", json={"prompt": "SONG: A\n", "max_new_tokens": 20, "seed": 1},
                       timeout=60).raise_for_status()
            alone.append(time.perf_counter() - started)
        httpx.post(f"{base}/v1/lines", json={"prompt": "x\n", "n": 1, "syllables": 4, "seed": 1}, timeout=120)
        print(f"the 20-token generation alone: {min(alone) * 1e3:.0f} ms\n")
        print(f"{'body':<62} | answer (status) | the generation beside it")
        worst_body = worst_generation = 0.0
        for path, body, what in [b for b in BODIES if args.only in (None, b[0])]:
            for _ in range(args.rounds):
                seconds, status, generation = asyncio.run(beside(base, path, body))
                worst_body, worst_generation = max(worst_body, seconds), max(worst_generation, generation)
                print(f"{path + ' ' + what:<62} | {seconds:6.2f} s ({status}) | {generation:6.2f} s")
        print(f"\nworst: answer {worst_body:.2f} s (goal <= 5 s), generation beside it {worst_generation:.2f} s "
              f"(goal <= 1 s); load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
