"""Training benchmark: validation nats/char reached in a fixed wall-clock budget, and throughput.

Trains the default configuration on tiny shakespeare with the project's own
command for --minutes (10 by default), then prints the validation figure on
the benchmark split and the training throughput in tokens and characters per
second.

    python bench/training.py                      # one process, all cores
    python bench/training.py --processes 2        # torchrun, one thread each
    python bench/training.py --minutes 2 --out /tmp/quick
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lyricist.model.checkpoint import read_extra_file  # noqa: E402
from lyricist.training.data import read_corpus  # noqa: E402

CORPUS = ROOT / "data" / "tinyshakespeare" / "input.txt"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--out", default="/tmp/lyricist-bench-training")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="passed to lyricist train")
    args = parser.parse_args()

    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    lyricist = shutil.which("lyricist") or "lyricist"
    train = [lyricist, "train", "--corpus", str(CORPUS), "--out", str(out), "--max-minutes", str(args.minutes)]
    for setting in args.set:
        train += ["--set", setting]
    if args.processes > 1:
        train = ["torchrun", "--standalone", "--nproc-per-node", str(args.processes)] + train
    started = time.monotonic()
    subprocess.run(train, check=True, stderr=subprocess.DEVNULL)
    wall = time.monotonic() - started

    log = [json.loads(line) for line in read_extra_file(out, "metrics.jsonl").decode().splitlines()]
    config = json.loads((out / "config.json").read_text())
    facts = config["training"]
    train_entries = [e for e in log if e["event"] == "train"]
    steady = train_entries[len(train_entries) // 5 :] or train_entries  # leave out warm-up
    tokens_per_s = sum(e["tokens_per_s"] for e in steady) / len(steady)
    corpus = read_corpus(CORPUS)
    chars_per_token = len(corpus.train_text) / _train_tokens(out, corpus)
    report = {
        "val_nats_per_char": facts["val_nats_per_char"],
        "val_bits_per_char": facts["val"]["bits_per_char"],
        "val_token_perplexity": facts["val"]["perplexity"],
        "train_minutes": facts["train_minutes"],
        "wall_minutes_including_setup": wall / 60,
        "steps": facts["steps"],
        "epochs": facts["epochs"],
        "tokens_per_s": tokens_per_s,
        "chars_per_s": tokens_per_s * chars_per_token,
        "processes": args.processes,
        "parameters": facts["parameters"],
        "machine": f"{platform.machine()}, {os.cpu_count()} cores; {facts['hardware']}",
    }
    print(json.dumps(report, indent=2))
    print("reproduce: python bench/training.py " + " ".join(sys.argv[1:]))


def _train_tokens(out: Path, corpus) -> int:
    from lyricist.model import load_checkpoint

    return len(load_checkpoint(out).tokenizer.encode(corpus.train_text, add_bos=True))


if __name__ == "__main__":
    main()
