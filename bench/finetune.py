"""Fine-tuning benchmark: a base model fine-tuned on 60 KB against the base itself and a from-scratch run.

Takes the first --own-kb KB of a text (cut at a line) as "someone's own lyrics",
fine-tunes the base checkpoint on it for --minutes with `lyricist train --from`,
trains a model from scratch on the same file for the same minutes, then scores
the rest of the text, which none of the three has seen, with each of them
(`lyricist eval`) and prints a table with the ratios and the exact commands.

    python bench/finetune.py --base checkpoints/songs-lstm \\
        --text data/tinyshakespeare/input.txt --part validation --minutes 3 --set run.threads=1

`--part validation` uses only the text's validation split (its last 10%, the
split every `lyricist train` holds out), so a base trained on that text's first
90% has seen none of it either.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lyricist.training.data import read_corpus  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, metavar="DIR", help="the checkpoint to fine-tune")
    parser.add_argument("--text", required=True, metavar="FILE", help="a UTF-8 text the base has not seen")
    parser.add_argument("--part", choices=("all", "validation"), default="all",
                        help="the whole text, or only its validation split (last 10%%)")
    parser.add_argument("--own-kb", type=float, default=60.0, help="how much of it is the 'own lyrics' (default 60)")
    parser.add_argument("--minutes", type=float, default=3.0, help="training budget of each run (default 3)")
    parser.add_argument("--out", default="/tmp/lyricist-bench-finetune", help="work folder (emptied first)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="passed to both training runs, e.g. run.threads=1 (repeatable)")
    args = parser.parse_args()

    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    corpus = read_corpus(args.text)
    text = corpus.validation_text if args.part == "validation" else corpus.text
    own, rest = split_own(text, int(args.own_kb * 1000))
    (out / "own.txt").write_text(own, encoding="utf-8")
    (out / "rest.txt").write_text(rest, encoding="utf-8")
    print(f"own lyrics: {len(own.encode()):,} bytes; scored: the other {len(rest.encode()):,} bytes "
          f"({args.text}{', validation split' if args.part == 'validation' else ''})", file=sys.stderr)

    lyricist = shutil.which("lyricist") or "lyricist"
    settings = [part for setting in args.set for part in ("--set", setting)]
    budget = ["--max-minutes", str(args.minutes)]
    own_path, rest_path = str(out / "own.txt"), str(out / "rest.txt")
    commands = {
        "fine-tuned": [lyricist, "train", "--from", args.base, "--corpus", own_path, "--out",
                       str(out / "fine-tuned"), *budget, *settings],
        "scratch": [lyricist, "train", "--corpus", own_path, "--out", str(out / "scratch"), *budget, *settings],
    }
    walls = {}
    for name, command in commands.items():
        print(f"$ {shlex.join(command)}", file=sys.stderr)
        started = time.monotonic()
        subprocess.run(command, check=True, stdout=sys.stderr)  # the progress; stdout keeps only the table
        walls[name] = time.monotonic() - started

    rows = {}
    models = {"base": args.base, "fine-tuned": str(out / "fine-tuned"), "scratch": str(out / "scratch")}
    for name, model in models.items():
        command = [lyricist, "eval", "--model", model, "--text", rest_path]
        commands[f"eval {name}"] = command
        rows[name] = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)

    facts = {name: json.loads((out / name / "config.json").read_text())["training"] for name in walls}
    tuned = rows["fine-tuned"]["nats_per_char"]
    print(f"\nScored on {rows['base']['chars']:,} characters none of the models saw "
          f"(fine-tuned and from scratch: {args.minutes:g} minutes each on {len(own.encode()):,} bytes)\n")
    print("| model | nats/char | bits/char | word perplexity | fine-tuned ÷ this | steps | wall time |")
    print("|---|---|---|---|---|---|---|")
    for name, metrics in rows.items():
        steps = facts[name]["steps"] if name in facts else "—"
        wall = f"{walls[name] / 60:.1f} min" if name in walls else "—"
        print(f"| {name} | {metrics['nats_per_char']:.4f} | {metrics['bits_per_char']:.3f} | "
              f"{metrics['word_perplexity']:.1f} | {tuned / metrics['nats_per_char']:.3f} | {steps} | {wall} |")
    print(f"\nfine-tuned: {tuned / rows['base']['nats_per_char']:.3f}× the base's nats/char and "
          f"{tuned / rows['scratch']['nats_per_char']:.3f}× the from-scratch run's")
    tuned_facts = facts["fine-tuned"]
    print(f"fine-tuned: stopped by {tuned_facts['stop_reason']}; on its own held-out slice "
          f"{tuned_facts['base_val_nats_per_char']:.4f} (base) -> {tuned_facts['val_nats_per_char']:.4f} nats/char; "
          f"{tuned_facts['byte_fallback_share']:.1%} of the own text read as bytes")
    print("\ncommands:")
    for command in commands.values():
        print("  " + shlex.join(command))
    print("reproduce: python bench/finetune.py " + shlex.join(sys.argv[1:]))


def split_own(text: str, size: int) -> tuple[str, str]:
    """The first `size` bytes of `text`, ending at a line break, and the rest."""
    head = text.encode("utf-8")[:size].decode("utf-8", errors="ignore")
    cut = head.rfind("\n") + 1 or len(head)
    if cut >= len(text):
        raise SystemExit(f"the text has only {len(text.encode()):,} bytes: nothing would be left to score")
    return text[:cut], text[cut:]


if __name__ == "__main__":
    main()
