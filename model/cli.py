"""The `lyricist` command. Each package adds its subcommands through the
`lyricist.commands` entry points in pyproject.toml, so this dispatcher knows
none of them by name."""

from __future__ import annotations

import argparse
import re
import sys
from importlib.metadata import entry_points

from .checkpoint import CheckpointError, attach_backward, load_checkpoint, load_forward_checkpoint, rewrite_checkpoint
from .generation import generate
from .sampling import SamplingParams


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lyricist", description="Train and serve LSTM language models.")
    subcommands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for entry in sorted(entry_points(group="lyricist.commands"), key=lambda e: e.name):
        entry.load()(subcommands)
    args = parser.parse_args(argv)
    try:
        return args.run(args) or 0
    except (CheckpointError, ValueError) as error:
        print(f"lyricist {args.command}: error: {error}", file=sys.stderr)
        return 1
    except OSError as error:  # a full disk, a directory we may not write: the path and the reason, no traceback
        where = f"{error.filename}: " if error.filename else ""
        print(f"lyricist {args.command}: error: {where}{error.strerror or error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def add_generate_command(subcommands: argparse._SubParsersAction) -> None:
    p = subcommands.add_parser("generate", help="print a generation from a checkpoint")
    p.add_argument("--model", required=True, metavar="DIR", help="checkpoint directory")
    p.add_argument("--prompt", default="", help="text to continue (default: start of a text)")
    p.add_argument("--max-new-tokens", type=int, default=200, metavar="N")
    defaults = SamplingParams()
    p.add_argument("--temperature", type=float, default=0.8, help="0 = greedy (default 0.8)")
    p.add_argument("--top-k", type=int, default=defaults.top_k, help="0 = off")
    p.add_argument("--top-p", type=float, default=defaults.top_p, help="1 = off")
    p.add_argument("--min-p", type=float, default=defaults.min_p, help="0 = off")
    p.add_argument("--repetition-penalty", type=float, default=defaults.repetition_penalty, help="1 = off")
    p.add_argument("--noise", type=float, default=defaults.noise, help="Gumbel noise scale, 0 = off")
    p.add_argument("--seed", type=int, default=None, help="make the output reproducible")
    p.set_defaults(run=_run_generate)


def _run_generate(args: argparse.Namespace) -> None:
    if args.max_new_tokens < 1:
        raise ValueError(f"--max-new-tokens must be at least 1, got {args.max_new_tokens}")
    params = SamplingParams(
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        min_p=args.min_p,
        repetition_penalty=args.repetition_penalty,
        noise=args.noise,
        seed=args.seed,
    )
    checkpoint = load_forward_checkpoint(args.model)
    sys.stdout.write(args.prompt)
    for text in generate(checkpoint.model, checkpoint.tokenizer, args.prompt, args.max_new_tokens, params):
        sys.stdout.write(text)
        sys.stdout.flush()
    sys.stdout.write("\n")


def add_start_command(subcommands: argparse._SubParsersAction) -> None:
    p = subcommands.add_parser("start", help="show or set the context a checkpoint reads every text after")
    p.add_argument("--model", required=True, metavar="DIR", help="checkpoint directory (rewritten atomically)")
    what = p.add_mutually_exclusive_group()
    what.add_argument("--text", metavar="TEXT", help=r"the context, \n for a line break (docs/model.md)")
    what.add_argument("--none", action="store_true", help="read every text from the start marker alone")
    p.set_defaults(run=_run_start)


def _run_start(args: argparse.Namespace) -> None:
    checkpoint = load_checkpoint(args.model)
    tokenizer = checkpoint.tokenizer
    if args.none:
        rewrite_checkpoint(args.model, start=[])
    elif args.text is not None:
        context = re.sub(r"\\(n|t|\\)", lambda m: {"n": "\n", "t": "\t", "\\": "\\"}[m.group(1)], args.text)
        pieces = tokenizer.encode(context)
        if not pieces:
            raise ValueError("--text must hold at least one piece of text; --none reads from the marker alone")
        rewrite_checkpoint(args.model, start=[tokenizer.bos_id, *pieces])
    start = load_checkpoint(args.model).start_text
    shown = repr(start) if start is not None else "none (the start marker alone)"
    print(f"{args.model}: every text is read after {shown}")


def add_backward_command(subcommands: argparse._SubParsersAction) -> None:
    p = subcommands.add_parser("backward", help="show or set the backward model a checkpoint carries")
    p.add_argument("--model", required=True, metavar="DIR", help="forward checkpoint directory (rewritten atomically)")
    what = p.add_mutually_exclusive_group()
    what.add_argument("--from", dest="backward", metavar="DIR",
                      help="a checkpoint trained with --set model.direction=backward (docs/training.md)")
    what.add_argument("--none", action="store_true", help="carry no backward model")
    p.set_defaults(run=_run_backward)


def _run_backward(args: argparse.Namespace) -> None:
    if args.none or args.backward:
        attach_backward(args.model, None if args.none else load_checkpoint(args.backward))
    checkpoint = load_checkpoint(args.model)
    if checkpoint.backward is None:
        print(f"{args.model}: no backward model; the alternatives are ranked by this model alone")
        return
    facts = checkpoint.backward_training
    trained = f", {facts['val_nats_per_char']:.4f} nats/char on its validation text read backward" \
        if "val_nats_per_char" in facts else ""
    print(f"{args.model}: carries a backward model ({checkpoint.backward.num_parameters():,} parameters{trained})")


if __name__ == "__main__":
    sys.exit(main())
