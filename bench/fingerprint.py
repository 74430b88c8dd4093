"""Every kind of answer the service gives, seeded, in one JSON file: to show that a change kept outputs identical.

A refactor must not move a single bit of a seeded output or a score. This starts the real server on the shipped
models, asks each endpoint a fixed set of questions (seeded generations, sampled one by one and eight at once,
streamed and not; predictions with and without songwriting constraints; static and adapted scores;
completions; analyses; lines; verses), drops what differs by nature (ids, timestamps, durations), and writes the
answers. Run it before and after the change and compare:

    python bench/fingerprint.py --out before.json          # on the old tree
    python bench/fingerprint.py --compare before.json      # on the new tree: exits 1 and names every difference
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

import httpx

from processes import ROOT, start_server

SONGS = ROOT / "checkpoints" / "songs-lstm"
SHAKESPEARE = ROOT / "checkpoints" / "shakespeare-lstm"
VOLATILE = {"id", "created", "duration_ms", "elapsed_ms", "system_fingerprint"}

SONG_PROMPT = "SONG: The Water Is Wide\nThe water is wide, I cannot get"
PLAY_PROMPT = "ROMEO:\nBut soft, what light"
VERSE = "Twinkle, twinkle, little star,\nHow I wonder what you are.\nUp above the world so high,\nLike a diamond in the sky."

QUESTIONS: list[tuple[str, dict]] = [
    *[("/v1/generate", {"model": model, "prompt": prompt, "max_new_tokens": 40, "seed": seed, **extra})
      for model, prompt in (("songs-lstm", SONG_PROMPT), ("shakespeare-lstm", PLAY_PROMPT))
      for seed, extra in ((1, {"temperature": 0.8}), (2, {"temperature": 0}),
                          (3, {"temperature": 1.1, "top_k": 40, "top_p": 0.9, "min_p": 0.02}),
                          (4, {"repetition_penalty": 1.3, "noise": 0.5}),
                          (5, {"stop": ["\n\n"], "logprobs": 3}))],
    *[("/v1/predict", {"model": model, "prompt": prompt, "top_k": 10, **extra})
      for model, prompt in (("songs-lstm", SONG_PROMPT), ("shakespeare-lstm", PLAY_PROMPT))
      for extra in ({}, {"unit": "token"}, {"temperature": 0.7})],
    ("/v1/predict", {"prompt": "We danced until the morning came,\nAnd whispered softly of your", "rhymes_with": "came",
                     "top_k": 8}),
    ("/v1/predict", {"prompt": SONG_PROMPT, "syllables": 2, "top_k": 8}),
    ("/v1/predict", {"prompt": "I walked along the river side,\nAnd there I met my", "rhymes_with": "side",
                     "rhyme": "near", "syllables": 1, "top_k": 8}),
    ("/v1/score", {"model": "shakespeare-lstm", "text": "To be, or not to be, that is the question."}),
    ("/v1/score", {"model": "shakespeare-lstm", "text": "To be, or not to be, that is the question.", "adapt": True}),
    ("/v1/score", {"text": VERSE}),
    ("/v1/score", {"text": VERSE, "adapt": True}),
    ("/v1/completions", {"model": "shakespeare-lstm", "prompt": "HAMLET:\n", "max_tokens": 30, "temperature": 0.8,
                         "seed": 7, "n": 2, "logprobs": 2, "echo": True}),
    ("/v1/completions", {"model": "songs-lstm", "prompt": ["SONG: A\n", "SONG: B\n"], "max_tokens": 20, "seed": 9,
                         "stop": ["\n"]}),
    ("/v1/analyze", {"text": VERSE}),
    ("/v1/lines", {"prompt": "I left my home at break of day,\n", "n": 3, "syllables": 8, "rhymes_with": "day",
                   "seed": 7}),
    ("/v1/lines", {"prompt": SONG_PROMPT + " o'er,\n", "n": 2, "syllables": 6, "seed": 3}),
    ("/v1/verse", {"prompt": "SONG: The Rover\n", "scheme": "ABAB", "syllables": [8, 6, 8, 6], "seed": 3}),
]


def normalised(value):
    if isinstance(value, dict):
        return {k: normalised(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [normalised(v) for v in value]
    return value


async def ask(client: httpx.AsyncClient, path: str, body: dict):
    response = await client.post(path, json=body)
    return {"status": response.status_code, "body": normalised(response.json())}


async def stream(client: httpx.AsyncClient, body: dict) -> list:
    events = []
    async with client.stream("POST", "/v1/generate", json={**body, "stream": True}) as response:
        async for line in response.aiter_lines():
            if line.startswith("data: "):
                data = line.removeprefix("data: ")
                events.append(data if data == "[DONE]" else normalised(json.loads(data)))
    return events


async def fingerprint(base: str) -> dict:
    answers = {}
    async with httpx.AsyncClient(base_url=base, timeout=300) as client:
        for number, (path, body) in enumerate(QUESTIONS):
            answers[f"{number:02d} {path} {json.dumps(body, sort_keys=True)}"] = await ask(client, path, body)
        streamed = {"model": "songs-lstm", "prompt": SONG_PROMPT, "max_new_tokens": 30, "seed": 11, "logprobs": 2}
        answers["stream alone"] = await stream(client, streamed)
        # Eight seeded generations at once, beside a stream: a row's bits must not depend on its company.
        together = await asyncio.gather(stream(client, streamed), *[
            ask(client, "/v1/generate", {"prompt": SONG_PROMPT, "max_new_tokens": 30, "seed": seed, "temperature": 0.9})
            for seed in range(8)])
        answers["stream among eight"] = together[0]
        answers["eight at once"] = together[1:]
        answers["the same eight one by one"] = [
            await ask(client, "/v1/generate", {"prompt": SONG_PROMPT, "max_new_tokens": 30, "seed": seed,
                                               "temperature": 0.9}) for seed in range(8)]
    return answers


def differences(before, after, where="") -> list[str]:
    if type(before) is not type(after):
        return [f"{where}: {before!r} became {after!r}"]
    if isinstance(before, dict):
        found = [f"{where}/{k}: only before" for k in before.keys() - after.keys()]
        found += [f"{where}/{k}: only after" for k in after.keys() - before.keys()]
        for key in before.keys() & after.keys():
            found += differences(before[key], after[key], f"{where}/{key}")
        return found
    if isinstance(before, list):
        if len(before) != len(after):
            return [f"{where}: {len(before)} items became {len(after)}"]
        return [d for i, (b, a) in enumerate(zip(before, after)) for d in differences(b, a, f"{where}[{i}]")]
    return [] if before == after else [f"{where}: {before!r} became {after!r}"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--out", type=Path, help="write the answers here")
    target.add_argument("--compare", type=Path, help="compare the answers with this earlier file")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: the engine's choice)")
    args = parser.parse_args()
    server, base = start_server(SONGS, args.threads, beside=(SHAKESPEARE,))
    try:
        answers = asyncio.run(fingerprint(base))
    finally:
        server.terminate()
        server.wait()
    together, one_by_one = answers["eight at once"], answers["the same eight one by one"]
    if together != one_by_one or answers["stream alone"] != answers["stream among eight"]:
        sys.exit("a seeded answer changed with the requests beside it")
    if args.out:
        args.out.write_text(json.dumps(answers, indent=1, sort_keys=True) + "\n")
        print(f"{len(answers)} answers written to {args.out}")
        return
    found = differences(json.loads(args.compare.read_text()), json.loads(json.dumps(answers)))
    for line in found:
        print(line)
    print(f"{len(answers)} answers, {len(found)} differences from {args.compare}")
    sys.exit(1 if found else 0)


if __name__ == "__main__":
    main()
