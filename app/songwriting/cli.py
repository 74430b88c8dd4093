"""`lyricist analyze [FILE|-]`: syllables, stress and rhyme scheme of lyrics, as `/v1/analyze` (docs/songwriting.md)."""

from __future__ import annotations

import argparse
import json
import sys


def add_analyze_command(subcommands: argparse._SubParsersAction) -> None:
    p = subcommands.add_parser(
        "analyze", help="syllables, stress and rhyme scheme of lyrics",
        description="Per stanza (blank lines separate them) and line: syllables, stress (1 stressed, 0 not), "
                    "end word, rhyme part, scheme letter (- for a line that rhymes with no other in its "
                    "stanza) and the words the dictionary lacks (their pronunciation is estimated).")
    p.add_argument("file", nargs="?", default="-", metavar="FILE", help="the lyrics (default -, standard input)")
    p.add_argument("--json", action="store_true", help="print JSON in the shape of /v1/analyze")
    p.add_argument("--near", action="store_true",
                   help="count near rhymes (assonance, consonance) in the scheme, not only perfect rhymes")
    p.add_argument("--model", default=None, metavar="DIR",
                   help="a checkpoint: also each line's nats_per_char, how surprising the model finds it in context")
    p.set_defaults(run=_run_analyze)


def _run_analyze(args: argparse.Namespace) -> None:
    from .analysis import analyze_text, format_table
    from .phonology import Phonology

    if args.file == "-":
        text = sys.stdin.read()
    else:
        with open(args.file, encoding="utf-8") as f:
            text = f.read()
    scorer, model = None, None
    if args.model:  # the model's surprisal per line: the whole text scored once (tasks.model_scorer)
        from lyricist.model import load_checkpoint

        from .tasks import model_scorer

        checkpoint = load_checkpoint(args.model)
        scorer, model = model_scorer(checkpoint.model, checkpoint.tokenizer), checkpoint.name
    stanzas = analyze_text(text, Phonology.load(), rhyme="near" if args.near else "perfect", scorer=scorer)
    if args.json:
        print(json.dumps({"model": model, "stanzas": stanzas}, ensure_ascii=False, indent=2))
    else:
        sys.stdout.write(format_table(stanzas) if stanzas else "no lyrics (no non-blank line)\n")
