"""What the server holds with many long streams at once (issue 27: the memory's ring is per stream).

    python bench/streams_rss.py [--streams 64] [--prompt-pieces 700] [--new-tokens 300] [--model DIR ...]

Starts `lyricist serve` as shipped (both default models, each with its continuous cache; a stream that writes
keeps no ring, docs/memory.md) on a free port, then sends `--streams` streamed /v1/generate requests at once to
the default model, each a prompt of about `--prompt-pieces` pieces of the songs' validation text and
`--new-tokens` new ones (about 1,000 pieces a stream in all); `--model` serves those checkpoints instead, the
first the default. Prints the server's RSS loaded, its peak while the streams ran (VmHWM), and how long they
took.
"""

from __future__ import annotations

import argparse
import asyncio
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]


def rss_mb(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} for process {pid}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def one_stream(client: httpx.AsyncClient, prompt: str, tokens: int, seed: int) -> int:
    body = {"prompt": prompt, "max_new_tokens": tokens, "stream": True, "seed": seed}
    events = 0
    async with client.stream("POST", "/v1/generate", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            events += line.startswith("data:")
    return events


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=64)
    parser.add_argument("--prompt-pieces", type=int, default=700)
    parser.add_argument("--new-tokens", type=int, default=300)
    parser.add_argument("--model", action="append", default=[], metavar="DIR")
    args = parser.parse_args()
    text = (ROOT / "data" / "songs" / "valid.txt").read_text(encoding="utf-8")
    chars = args.prompt_pieces * 3  # about 3 characters a piece in the songs model
    prompts = [text[i * 5000: i * 5000 + chars] for i in range(args.streams)]
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "lyricist.model.cli", "serve", "--port", str(port),
                               *(arg for path in args.model for arg in ("--model", path))],
                              env={"LYRICIST_MAX_NEW_TOKENS": str(args.new_tokens), "PATH": "/usr/bin:/bin"},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        loaded = rss_mb(server.pid, "VmRSS")

        async def run() -> list[int]:
            async with httpx.AsyncClient(base_url=base, timeout=600) as client:
                return await asyncio.gather(*(one_stream(client, p, args.new_tokens, i) for i, p in enumerate(prompts)))

        started = time.perf_counter()
        events = asyncio.run(run())
        took = time.perf_counter() - started
        peak, after = rss_mb(server.pid, "VmHWM"), rss_mb(server.pid, "VmRSS")
    finally:
        server.terminate()
        server.wait()
    print(f"reproduce: python bench/streams_rss.py {' '.join(shlex.quote(a) for a in sys.argv[1:])}")
    print(f"{args.streams} streams, prompts of about {args.prompt_pieces} pieces, {args.new_tokens} new tokens each"
          f" ({sum(events):,} stream events in {took:.0f} s)")
    served = ", ".join(args.model) if args.model else "both default models"
    print(f"server RSS ({served}): loaded {loaded:.0f} MB, peak {peak:.0f} MB, after {after:.0f} MB")


if __name__ == "__main__":
    main()
