"""Serving benchmark (issue 4): predict latency, generate throughput by concurrency, the plain-loop ceiling, RSS.

    python bench/serving.py [--model checkpoints/shakespeare-lstm] [--threads N] [--seconds S]

Starts the real server (`lyricist serve`) on a free port, measures it over HTTP,
and prints each figure with the command that reproduces it. Without the model
directory it measures a random-weight checkpoint of the shipped shape (2-layer
LSTM, hidden 512, embedding 512, vocabulary 4000): speed does not depend on the
weights, and the output says which was measured.
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


def plain_loop(model_dir: Path, batch: int, steps: int, threads: int) -> float:
    """Tokens/s of the model stepped in a bare loop with the same sampler: the ceiling for the service."""
    torch.set_num_threads(threads)
    checkpoint = load_checkpoint(model_dir)
    model = checkpoint.model.eval()
    params = [SamplingParams(temperature=0.8, seed=i) for i in range(batch)]
    generators = [make_generator(i) for i in range(batch)]
    with torch.inference_mode():
        logits, state = model(torch.full((batch, 1), checkpoint.tokenizer.bos_id))
        for warm in range(2):
            started = time.perf_counter()
            for _ in range(steps if warm else 10):
                tokens = sample(logits[:, -1], params, generators)
                logits, state = model(tokens.view(-1, 1), state)
    return batch * steps / (time.perf_counter() - started)


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


def predict_figures(base: str, tokenizer, count: int) -> float:
    """/v1/predict latency three ways; returns the p50 of a repeated prompt, the measure the issue set."""
    prompts = fifty_piece_prompts(tokenizer, count)
    # As the demo page asks: the same 50-piece prompt again (other controls changed), so its prefix is cached.
    repeated = [prompts[0]] * count
    # Typing: each prompt one word longer than the last, up to 50 pieces.
    typing = [" ".join(prompt.split(" ")[:n]) for prompt in prompts for n in range(2, prompt.count(" ") + 2)]
    result = None
    for name, batch in (("the same prompt again", repeated), ("typing, a word at a time", typing[:count]),
                        ("a new prompt each time", prompts)):
        times, exact = asyncio.run(predict_latency(base, batch))
        times.sort()
        p50, p99 = statistics.median(times), times[int(0.99 * (len(times) - 1))]
        print(f"/v1/predict (word unit, top 10, <= 50-piece prompts), {name}: p50 {p50 * 1e3:.1f} ms, "
              f"p99 {p99 * 1e3:.1f} ms, {exact}/{len(times)} exact")
        result = p50 if result is None else result
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--threads", type=int, default=max(1, (os.cpu_count() or 1) - 1),
                        help="LYRICIST_THREADS for the server (default: the server's own, all cores but one)")
    parser.add_argument("--seconds", type=float, default=10.0, help="per concurrency level")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--predict-count", type=int, default=200)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32, 64])
    args = parser.parse_args()
    command = "python bench/serving.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])

    with tempfile.TemporaryDirectory() as scratch:
        model_dir = args.model
        if (model_dir / "config.json").is_file():
            what = f"{model_dir} (corpus: {load_checkpoint(model_dir).training.get('corpus', 'unknown')})"
        else:
            model_dir = random_checkpoint(Path(scratch))
            what = f"random weights of the shipped shape ({args.model} not found): speed does not depend on weights"
        config = load_checkpoint(model_dir).model.config
        print(f"model: {what}: {config.cell} {config.layers}x{config.hidden_size}, embedding {config.embedding_size}, "
              f"vocabulary {config.vocab_size}; torch threads {args.threads}; {os.cpu_count()} cores")
        print(f"reproduce: {command}\n")

        ceiling = {b: plain_loop(model_dir, b, 300 if b == 1 else 100, args.threads) for b in (1, 32)}
        print(f"plain in-process loop: {ceiling[1]:.0f} tokens/s at batch 1, {ceiling[32]:.0f} tokens/s at batch 32 "
              f"({ceiling[32] / ceiling[1]:.1f}x)")

        server, base = start_server(model_dir, args.threads, LYRICIST_MAX_QUEUE="1024")
        try:
            loaded_rss = process_figures(server.pid)["rss_mb"]
            p50 = predict_figures(base, load_checkpoint(model_dir).tokenizer, args.predict_count)
            rates = {}
            for clients in args.concurrency:
                rate, errors = asyncio.run(generate_throughput(base, clients, args.seconds, args.max_new_tokens))
                rates[clients] = rate
                print(f"/v1/generate, {clients:3d} concurrent clients, {args.max_new_tokens} tokens each: "
                      f"{rate:7.0f} tokens/s aggregate" + (f" ({errors} errors)" if errors else ""))
            peak = process_figures(server.pid)["peak_rss_mb"]
            time.sleep(2)
            idle_rss = process_figures(server.pid)["rss_mb"]
            print(f"server RSS: {loaded_rss:.0f} MB loaded, {peak:.0f} MB peak, {idle_rss:.0f} MB after the load")
            if 1 in rates:
                print(f"\nsingle client / plain loop batch 1: {rates[1] / ceiling[1]:.0%} (bar: >= 85%)")
                if 32 in rates:
                    print(f"32 clients / single client: {rates[32] / rates[1]:.1f}x (bar: >= 10x)")
            print(f"predict p50: {p50 * 1e3:.1f} ms (bar: <= 10 ms); peak RSS {peak:.0f} MB (bar: <= 500 MB)")
        finally:
            server.terminate()
            server.wait(timeout=30)


if __name__ == "__main__":
    main()
