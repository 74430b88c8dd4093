"""Serving benchmark (issues 4, 11 and 25): every figure of their tables in one run, beside its raw ceiling.

    python bench/serving.py [--model checkpoints/shakespeare-lstm] [--threads N] [--seconds S] [--rounds R]

Starts the real server (`lyricist serve`) on a free port and measures it over
HTTP: one stream and 32 streams of /v1/generate (each against a raw sampling
loop of the same batch, in this process), the longest gap between two tokens
of a streamed generation while a verse and lines are written beside it,
/v1/score of a 19,000-character
text alone, then again while small /v1/predict calls follow one another (the
longest wait among them, and the score's rate beside them), /v1/predict of
a new and of a repeated ~50-piece prompt, and the server's RSS around the
score. The raw in-process loops (a decode loop at batch 1, one full-sequence
forward + log-softmax) run in this process in the same rounds, interleaved
with the server's figures (the machine is noisy), at every core and at one thread;
each ratio is the median of its rounds' ratios, against the better of the
raw figure at every core and at one thread (on a loaded machine two
spinning threads can lose to one by far). Without the model directory it
measures a random-weight checkpoint of the shipped shape (speed does not
depend on the weights), and says so.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from processes import process_figures, start_server

from lyricist.model import LanguageModel, ModelConfig, SamplingParams, Tokenizer, load_checkpoint, save_checkpoint
from lyricist.model.sampling import make_generator, sample

DEFAULT_MODEL = ROOT / "checkpoints" / "shakespeare-lstm"
SHAKESPEARE = ROOT / "data" / "tinyshakespeare" / "input.txt"
SHIPPED_SHAPE = {"cell": "lstm", "layers": 2, "hidden_size": 512, "embedding_size": 512}


def random_checkpoint(directory: Path) -> Path:
    tokenizer = Tokenizer.train(SHAKESPEARE.read_text(encoding="utf-8"), vocab_size=4000)
    torch.manual_seed(0)
    model = LanguageModel(ModelConfig(vocab_size=tokenizer.vocab_size, **SHIPPED_SHAPE))
    return save_checkpoint(directory / "random-shipped-shape", model, tokenizer, {"corpus": "none (random weights)"})


def plain_loop(model, tokenizer, batch: int, steps: int, threads: int) -> float:
    """Tokens/s of the model stepped in a bare loop with the same sampler: the ceiling for the service."""
    torch.set_num_threads(threads)
    params = [SamplingParams(temperature=0.8, seed=i) for i in range(batch)]
    generators = [make_generator(i) for i in range(batch)]
    with torch.inference_mode():
        logits, state = model(torch.full((batch, 1), tokenizer.bos_id))
        for warm in range(2):
            started = time.perf_counter()
            for _ in range(steps if warm else 5):
                tokens = sample(logits[:, -1], params, generators)
                logits, state = model(tokens.view(-1, 1), state)
    return batch * steps / (time.perf_counter() - started)


def plain_score(model, tokenizer, text: str, threads: int) -> float:
    """Tokens/s of one full-sequence forward over the whole text and a log-softmax: the ceiling for /v1/score."""
    torch.set_num_threads(threads)
    ids = torch.tensor([tokenizer.encode(text, add_bos=True)])
    with torch.inference_mode():
        started = time.perf_counter()
        logits, _ = model(ids[:, :-1])
        torch.log_softmax(logits[0].double(), -1).gather(1, ids[0, 1:].unsqueeze(1))
    return (ids.shape[1] - 1) / (time.perf_counter() - started)


async def predict_latency(base: str, prompts: list[str]) -> tuple[list[float], int]:
    """Sequential requests, one per prompt, after 5 warm-up requests: (seconds each, how many were exact)."""
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        for prompt in prompts[:5]:
            (await client.post("/v1/predict", json={"prompt": prompt + " warm", "top_k": 10})).raise_for_status()
        times, exact = [], 0
        for prompt in prompts:
            started = time.perf_counter()
            response = await client.post("/v1/predict", json={"prompt": prompt, "top_k": 10})
            response.raise_for_status()
            times.append(time.perf_counter() - started)
            exact += response.json()["exact"]
        return times, exact


async def generate_throughput(base: str, clients: int, seconds: float, max_new_tokens: int) -> tuple[float, int]:
    """Aggregate generated tokens/s with `clients` clients each posting one request after another."""
    deadline = time.perf_counter() + seconds
    counts = [0] * clients
    errors = 0

    async def one_client(index: int, client: httpx.AsyncClient) -> None:
        nonlocal errors
        seed = index * 1000
        while time.perf_counter() < deadline:
            seed += 1
            response = await client.post("/v1/generate", json={"prompt": "ROMEO:", "max_new_tokens": max_new_tokens,
                                                               "temperature": 0.8, "seed": seed})
            if response.status_code != 200:
                errors += 1
                continue
            counts[index] += response.json()["usage"]["completion_tokens"]

    limits = httpx.Limits(max_connections=clients + 4)
    async with httpx.AsyncClient(base_url=base, timeout=120, limits=limits) as client:
        started = time.perf_counter()
        await asyncio.gather(*(one_client(i, client) for i in range(clients)))
        return sum(counts) / (time.perf_counter() - started), errors


def fifty_piece_prompts(tokenizer, count: int) -> list[str]:
    """`count` prompts of at most 50 pieces (with bos), each ending at a word's end, from spread-out places."""
    corpus = SHAKESPEARE.read_text(encoding="utf-8")
    prompts = []
    for start in range(0, len(corpus) - 2000, (len(corpus) - 2000) // count)[:count]:
        text = corpus[start:start + 400]
        ends = [i for i in range(1, len(text)) if text[i] == " " and text[i - 1].isalpha()]
        prompts.append(max((text[:i] for i in ends if len(tokenizer.encode(text[:i], add_bos=True)) <= 50), key=len))
    return prompts


async def gap_beside_songwriting(base: str) -> tuple[float, float, float]:
    """A streamed generation while /v1/verse and /v1/lines run beside it: (the longest gap between two of its
    tokens, its median gap, the songwriting's seconds), in seconds."""
    verse = {"prompt": "SONG: The Rover\n", "scheme": "ABAB", "syllables": 8, "seed": 3}
    lines = {"prompt": "I left my home at break of day,\n", "n": 5, "syllables": 8, "rhymes_with": "day", "seed": 7}
    async with httpx.AsyncClient(base_url=base, timeout=300) as client:
        (await client.post("/v1/lines", json={"prompt": "x\n", "n": 1, "syllables": 4, "seed": 1})).raise_for_status()
        writing = True

        async def stream() -> list[float]:
            gaps, last = [], None
            body = {"prompt": "SONG: A\n", "max_new_tokens": 100_000, "stream": True, "seed": 1}
            async with client.stream("POST", "/v1/generate", json=body) as response:
                async for line in response.aiter_lines():
                    if not line.startswith("data: "):
                        continue
                    now = time.perf_counter()
                    if last is not None and writing:
                        gaps.append(now - last)
                    last = now
                    if not writing:
                        break
            return gaps

        async def songwriting() -> float:
            nonlocal writing
            await asyncio.sleep(0.3)
            started = time.perf_counter()
            for path, body in (("/v1/verse", verse), ("/v1/lines", lines)):
                (await client.post(path, json=body)).raise_for_status()
            writing = False
            return time.perf_counter() - started

        gaps, seconds = await asyncio.gather(stream(), songwriting())
        return max(gaps), statistics.median(gaps), seconds


async def score_alone(base: str, text: str) -> tuple[float, int]:
    """/v1/score of `text` with nothing else asked: (tokens/s, tokens)."""
    async with httpx.AsyncClient(base_url=base, timeout=300) as client:
        started = time.perf_counter()
        response = await client.post("/v1/score", json={"text": text})
        seconds = time.perf_counter() - started
        response.raise_for_status()
        tokens = response.json()["tokens"]
        return tokens / seconds, tokens


async def score_and_predict(base: str, text: str, prompt: str) -> tuple[float, float, int, float]:
    """/v1/score of `text` while small /v1/predict calls follow one another: (the score's tokens/s, its
    seconds, its tokens, the longest predict meanwhile in seconds)."""
    async with httpx.AsyncClient(base_url=base, timeout=300) as client:
        longest, done = 0.0, False

        async def predicts():
            nonlocal longest
            while not done:
                started = time.perf_counter()
                (await client.post("/v1/predict", json={"prompt": prompt, "top_k": 5, "unit": "token"})).raise_for_status()
                longest = max(longest, time.perf_counter() - started)

        asker = asyncio.ensure_future(predicts())
        await asyncio.sleep(0.05)
        started = time.perf_counter()
        response = await client.post("/v1/score", json={"text": text})
        seconds = time.perf_counter() - started
        done = True
        await asker
        response.raise_for_status()
        tokens = response.json()["tokens"]
        return tokens / seconds, seconds, tokens, longest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--beside", type=Path, action="append", default=[], metavar="DIR",
                        help="another model loaded after the measured one (the RSS with every default model: "
                             "--beside checkpoints/songs-lstm)")
    parser.add_argument("--threads", type=int, default=None,
                        help="LYRICIST_THREADS for the server (default: unset, the engine chooses per step)")
    parser.add_argument("--seconds", type=float, default=6.0, help="per generate figure, per round")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of server and raw figures")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--predict-count", type=int, default=60)
    parser.add_argument("--score-chars", type=int, default=19000)
    args = parser.parse_args()
    command = "python bench/serving.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)

    with tempfile.TemporaryDirectory() as scratch:
        model_dir = args.model
        if (model_dir / "config.json").is_file():
            what = f"{model_dir} (corpus: {load_checkpoint(model_dir).training.get('corpus', 'unknown')})"
        else:
            model_dir = random_checkpoint(Path(scratch))
            what = f"random weights of the shipped shape ({args.model} not found): speed does not depend on weights"
        checkpoint = load_checkpoint(model_dir)
        model, tokenizer = checkpoint.model.eval(), checkpoint.tokenizer
        config = model.config
        print(f"model: {what}: {config.cell} {config.layers}x{config.hidden_size}, embedding {config.embedding_size}, "
              f"vocabulary {config.vocab_size}; loaded beside it: {', '.join(map(str, args.beside)) or 'nothing'}; "
              f"server threads {args.threads or 'chosen per step'}; {cores} cores; "
              f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        print(f"reproduce: {command}\n")
        text = SHAKESPEARE.read_text(encoding="utf-8")[100_000:100_000 + args.score_chars]
        prompts = fifty_piece_prompts(tokenizer, args.predict_count)

        server, base = start_server(model_dir, args.threads, beside=tuple(args.beside), LYRICIST_MAX_QUEUE="1024",
                                    LYRICIST_MAX_NEW_TOKENS="100000")
        rows: dict[str, list[float]] = {}

        def note(name: str, value: float) -> None:
            rows.setdefault(name, []).append(value)

        try:
            loaded_rss = process_figures(server.pid)["rss_mb"]
            asyncio.run(predict_latency(base, prompts[:5]))  # warm
            for round_ in range(args.rounds):
                raw1 = plain_loop(model, tokenizer, 1, 200, cores)
                one, _ = asyncio.run(generate_throughput(base, 1, args.seconds, args.max_new_tokens))
                raw32 = plain_loop(model, tokenizer, 32, 60, cores)
                many, _ = asyncio.run(generate_throughput(base, 32, args.seconds, args.max_new_tokens))
                raw32b = plain_loop(model, tokenizer, 32, 60, cores)
                raw1b = plain_loop(model, tokenizer, 1, 200, cores)
                raw1t = plain_loop(model, tokenizer, 1, 200, 1)
                gap, gap_median, writing = asyncio.run(gap_beside_songwriting(base))
                raw_score = plain_score(model, tokenizer, text, cores)
                before = process_figures(server.pid)["rss_mb"]
                rate, tokens = asyncio.run(score_alone(base, text))
                busy_rate, _, _, longest = asyncio.run(score_and_predict(base, text, prompts[0]))
                raw_scoreb = plain_score(model, tokenizer, text, cores)
                raw_score_t = plain_score(model, tokenizer, text, 1)
                time.sleep(1)
                after = process_figures(server.pid)["rss_mb"]
                new, _ = asyncio.run(predict_latency(base, prompts[round_::args.rounds]))
                same, _ = asyncio.run(predict_latency(base, [prompts[0]] * max(10, len(prompts) // args.rounds)))
                # The ceiling is the better of all cores and one thread: on a loaded machine two spinning
                # threads can lose to one by a wide margin, and a ratio against a stalled loop says nothing.
                raw_all, raw_s_all = (raw1 + raw1b) / 2, (raw_score + raw_scoreb) / 2
                raw, raw_s = max(raw_all, raw1t), max(raw_s_all, raw_score_t)
                note("raw1all", raw_all), note("raw1t", raw1t), note("rawsall", raw_s_all), note("rawst", raw_score_t)
                raw_batch = (raw32 + raw32b) / 2
                note("raw1", raw), note("one", one), note("one%", one / raw), note("many", many), note("x", many / one)
                note("raw32", raw_batch), note("many%", many / raw_batch)
                note("gap", gap), note("gap50", gap_median), note("writing", writing)
                note("raws", raw_s), note("score", rate), note("score%", rate / raw_s), note("wait", longest)
                note("busy", busy_rate), note("busy%", busy_rate / raw_s)
                note("new", statistics.median(new)), note("same", statistics.median(same))
                note("before", before), note("after", after)
                print(f"round {round_ + 1}: raw loop {raw:.0f}/s, 1 stream {one:.0f}/s ({one / raw:.0%}), raw batch-32 "
                      f"loop {raw_batch:.0f}/s, 32 streams {many:.0f}/s ({many / raw_batch:.0%}, {many / one:.1f}x one); "
                      f"token gaps beside a verse and lines: longest {gap * 1e3:.0f} ms, median {gap_median * 1e3:.0f} "
                      f"ms; raw score {raw_s:.0f}/s, /v1/score {rate:.0f}/s "
                      f"({tokens} tokens, {rate / raw_s:.0%}); beside predicts {busy_rate:.0f}/s, the longest predict "
                      f"{longest * 1e3:.0f} ms; "
                      f"predict p50 new {statistics.median(new) * 1e3:.1f} ms, same {statistics.median(same) * 1e3:.1f} ms;"
                      f" RSS {before:.0f} -> {after:.0f} MB")
            peak = process_figures(server.pid)["peak_rss_mb"]
        finally:
            server.terminate()
            server.wait(timeout=30)

    med = {name: statistics.median(values) for name, values in rows.items()}
    table = [
        ("one stream, tokens/s, against the best raw loop at batch 1", f"{med['one']:.0f} vs {med['raw1']:.0f} "
         f"({med['one%']:.0%})", ">= 85%"),
        ("  (the raw loop at all cores / at 1 thread)", f"{med['raw1all']:.0f} / {med['raw1t']:.0f}", ""),
        ("32 streams, tokens/s, against a raw batch-32 loop at every core", f"{med['many']:.0f} vs "
         f"{med['raw32']:.0f} ({med['many%']:.0%})", ">= 70%"),
        ("32 streams / one stream", f"{med['x']:.1f}x", ">= 10x"),
        ("longest gap between two tokens of a stream while a verse and lines are written", f"{med['gap'] * 1e3:.0f} ms "
         f"(median gap {med['gap50'] * 1e3:.0f} ms; the verse and lines took {med['writing']:.1f} s)", "<= 300 ms"),
        (f"/v1/score of a {args.score_chars:,}-character text, tokens/s, against the best full-sequence forward + "
         "log-softmax", f"{med['score']:.0f} vs {med['raws']:.0f} ({med['score%']:.0%})", ">= 70%"),
        ("  (the raw forward at all cores / at 1 thread)", f"{med['rawsall']:.0f} / {med['rawst']:.0f}", ""),
        ("longest wait of a small /v1/predict while that text is scored", f"{med['wait'] * 1e3:.0f} ms", "<= 300 ms"),
        ("  (/v1/score meanwhile, tokens/s, against the same forward)", f"{med['busy']:.0f} ({med['busy%']:.0%})", ""),
        ("/v1/predict, a new ~50-piece prompt each time, p50", f"{med['new'] * 1e3:.1f} ms", "<= 30 ms"),
        ("/v1/predict, the same prompt again, p50", f"{med['same'] * 1e3:.1f} ms", "<= 10 ms"),
        ("server RSS: loaded / before a score / after it / peak", f"{loaded_rss:.0f} / {med['before']:.0f} / "
         f"{med['after']:.0f} / {peak:.0f} MB", "<= 600 MB, back to its level"),
    ]
    width = max(len(name) for name, _, _ in table)
    print(f"\nmedians of {args.rounds} rounds (ratios: the median of each round's ratio); "
          f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"{'figure'.ljust(width)} | measured | goal")
    for name, value, goal in table:
        print(f"{name.ljust(width)} | {value} | {goal}")


if __name__ == "__main__":
    main()
