"""Soak: minutes of mixed traffic against the real server, then what it left behind.

    python bench/soak.py [--model checkpoints/shakespeare-lstm] [--minutes 3] [--clients 8] [--json]

Starts `lyricist serve` on a free port, warms it up with the same traffic, records the server's
resident memory (VmRSS), open file descriptors (/proc/PID/fd) and threads (/proc/PID/task), then
runs --clients concurrent clients for --minutes of a seeded random mix: next-word predictions,
generations, streams read to the end, streams dropped halfway, scores, OpenAI completions (some
streamed, some with n > 1 or echo) and malformed requests (each must get its 400). Afterwards it
records the same figures again once the server is idle, and prints the requests done, the errors
(an unexpected status, a dropped connection, a traceback in the server's log), both sets of
figures, and the command that reproduces the run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shlex
import statistics
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

import httpx
from processes import process_figures, start_server

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = ROOT / "checkpoints" / "shakespeare-lstm"
PROMPTS = ["ROMEO:", "KING HENRY:\nWhat say you", "To be, or not to be", "", "First Citizen:\nBefore we proceed",
           "O, ", "The quality of mercy is not strain'd", "JULIET:\nGood night, good night! parting is such"]


class Traffic:
    """Clients sending a seeded mix of requests, counting answers by kind and status."""

    def __init__(self, base: str, clients: int, seed: int, max_tokens: int):
        self.base, self.clients, self.seed, self.max_tokens = base, clients, seed, max_tokens
        self.statuses: dict[str, Counter] = defaultdict(Counter)
        self.latencies: dict[str, list[float]] = defaultdict(list)
        self.errors: list[str] = []

    def request(self, rng: random.Random) -> tuple[str, str, dict, int]:
        """(kind, path, body, expected status) of one request drawn from the mix."""
        prompt, tokens = rng.choice(PROMPTS), rng.randint(1, self.max_tokens)
        seed = rng.choice([None, rng.randrange(2**31)])
        kind = rng.choices(["predict", "generate", "stream", "stream_dropped", "score", "completion", "bad"],
                           weights=[4, 3, 2, 2, 2, 3, 1])[0]
        if kind == "predict":
            return kind, "/v1/predict", {"prompt": prompt, "top_k": rng.choice([1, 10, 50]),
                                         "unit": rng.choice(["word", "token"])}, 200
        if kind in ("generate", "stream", "stream_dropped"):
            return kind, "/v1/generate", {"prompt": prompt, "max_new_tokens": tokens, "seed": seed,
                                          "temperature": rng.choice([0, 0.8, 1.2]), "top_p": rng.choice([1, 0.9]),
                                          "logprobs": rng.choice([0, 0, 3]), "stop": rng.choice([[], ["\n\n"]]),
                                          "stream": kind != "generate"}, 200
        if kind == "score":
            return kind, "/v1/score", {"text": prompt + " and so it goes, said the man."}, 200
        if kind == "completion":
            echo = rng.random() < 0.2
            return kind, "/v1/completions", {"prompt": rng.choice([prompt, [prompt, "KING:"]]),
                                             "max_tokens": 0 if echo else tokens, "echo": echo,
                                             "logprobs": rng.choice([None, 2]), "n": rng.choice([1, 1, 2]),
                                             "seed": seed, "stream": not echo and rng.random() < 0.5}, 200
        path, bad = rng.choice([("/v1/predict", {"prompt": "a", "top_k": -1}), ("/v1/predict", {"prompt": 3}),
                                ("/v1/generate", {"prompt": "a", "temperature": 99}),
                                ("/v1/generate", {"prompt": "a", "stop": ["x"] * 9}),
                                ("/v1/completions", {"prompt": "a", "n": 1.5})])
        return kind, path, bad, 400

    async def one(self, client: httpx.AsyncClient, rng: random.Random) -> None:
        kind, path, body, expected = self.request(rng)
        started = time.perf_counter()
        try:
            if kind in ("stream", "stream_dropped") or (kind == "completion" and body.get("stream")):
                async with client.stream("POST", path, json=body) as response:
                    status, events, last = response.status_code, 0, ""
                    if status != expected:
                        await response.aread()
                    async for line in response.aiter_lines():
                        events, last = events + line.startswith("data: "), line or last
                        if kind == "stream_dropped" and events >= max(1, body["max_new_tokens"] // 2):
                            break  # leave halfway: the server must cancel and free the slot
                    else:
                        if status == 200 and last != "data: [DONE]":
                            self.errors.append(f"{kind}: the stream ended without [DONE]")
            else:
                response = await client.post(path, json=body)
                status = response.status_code
        except httpx.HTTPError as error:
            self.errors.append(f"{kind}: {type(error).__name__}: {error}")
            return
        self.statuses[kind][status] += 1
        self.latencies[kind].append(time.perf_counter() - started)
        if status != expected:
            self.errors.append(f"{kind}: status {status}, expected {expected}: {response.text[:200]}")

    async def run(self, seconds: float, pid: int | None = None) -> list[float]:
        """Send traffic for `seconds`; returns the server's RSS (MB) sampled at each tenth of the run."""
        deadline = time.monotonic() + seconds
        samples: list[float] = []

        async def sample_rss() -> None:
            while pid is not None and time.monotonic() < deadline:
                samples.append(round(process_figures(pid)["rss_mb"], 1))
                await asyncio.sleep(seconds / 10)

        async def client_loop(index: int, client: httpx.AsyncClient) -> None:
            rng = random.Random(self.seed * 1000 + index)
            while time.monotonic() < deadline:
                await self.one(client, rng)

        limits = httpx.Limits(max_connections=self.clients + 2)
        async with httpx.AsyncClient(base_url=self.base, timeout=120, limits=limits) as client:
            await asyncio.gather(sample_rss(), *(client_loop(i, client) for i in range(self.clients)))
        return samples

    def summary(self) -> dict:
        return {kind: {"requests": sum(counts.values()), "statuses": dict(counts),
                       "p50_ms": round(statistics.median(self.latencies[kind]) * 1000, 1),
                       "p99_ms": round(sorted(self.latencies[kind])[int(0.99 * (len(self.latencies[kind]) - 1))]
                                       * 1000, 1)}
                for kind, counts in sorted(self.statuses.items())}


def wait_until_idle(base: str, pid: int, fds_before: int, seconds: float = 10.0) -> None:
    """Until no sequence runs or waits and the clients' sockets are closed (or `seconds` pass)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        text = httpx.get(f"{base}/metrics").text
        busy = [line for line in text.splitlines()
                if line.startswith(("lyricist_running_sequences{", "lyricist_queue_depth{")) and not line.endswith(" 0.0")]
        if not busy and process_figures(pid)["fds"] <= fds_before:
            return
        time.sleep(0.1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--warmup-seconds", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=64, help="longest generation a request asks for")
    parser.add_argument("--threads", type=int, default=1, help="LYRICIST_THREADS of the server")
    parser.add_argument("--seed", type=int, default=0, help="seeds the traffic mix")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a report")
    args = parser.parse_args()
    command = "python bench/soak.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])

    log = Path(tempfile.mkstemp(prefix="lyricist-soak-", suffix=".log")[1])  # kept: the report names it
    with log.open("w") as output:
        server, base = start_server(args.model, args.threads, output)
    try:
        loaded = process_figures(server.pid)
        asyncio.run(Traffic(base, args.clients, args.seed + 1, args.max_tokens).run(args.warmup_seconds))
        wait_until_idle(base, server.pid, loaded["fds"])
        before = process_figures(server.pid)
        traffic = Traffic(base, args.clients, args.seed, args.max_tokens)
        started = time.monotonic()
        rss_trace = asyncio.run(traffic.run(args.minutes * 60, server.pid))
        elapsed = time.monotonic() - started
        wait_until_idle(base, server.pid, before["fds"])
        after = process_figures(server.pid)
        tracebacks = log.read_text().count("Traceback")
    finally:
        server.terminate()
        server.wait(timeout=60)
    requests = sum(kind["requests"] for kind in traffic.summary().values())
    errors = traffic.errors + [f"{tracebacks} traceback(s) in the server log {log}"] * bool(tracebacks)
    result = {"command": command, "model": str(args.model), "seconds": round(elapsed, 1), "clients": args.clients,
              "requests": requests, "requests_per_s": round(requests / elapsed, 1), "errors": len(errors),
              "error_samples": errors[:10], "by_kind": traffic.summary(),
              "loaded": loaded, "before": before, "after": after, "rss_mb_during": rss_trace,
              "server_log": str(log)}
    if args.json:
        print(json.dumps(result))
        return
    print(f"model: {args.model}; {args.clients} clients for {elapsed:.0f} s after a {args.warmup_seconds:.0f} s "
          f"warm-up; torch threads {args.threads}; {os.cpu_count()} cores")
    print(f"reproduce: {command}\n")
    print(f"requests: {requests} ({result['requests_per_s']}/s), errors: {len(errors)}")
    for kind, figures in result["by_kind"].items():
        print(f"  {kind:15s} {figures['requests']:6d}  statuses {figures['statuses']}  "
              f"p50 {figures['p50_ms']} ms, p99 {figures['p99_ms']} ms")
    for error in errors[:10]:
        print(f"  error: {error}")
    for name, unit in (("rss_mb", "MB"), ("fds", ""), ("threads", "")):
        print(f"{name:8s} loaded {loaded[name]:8.1f}   after warm-up {before[name]:8.1f}   "
              f"after the soak {after[name]:8.1f} {unit}  (change {after[name] - before[name]:+.1f})")
    print(f"RSS during the soak, every tenth of it: {rss_trace} MB")
    print(f"peak RSS {after['peak_rss_mb']:.1f} MB; server log: {log}")


if __name__ == "__main__":
    main()
