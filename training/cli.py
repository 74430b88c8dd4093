"""`lyricist train` and `lyricist eval`."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from pathlib import Path

import torch

from lyricist.model import load_checkpoint
from lyricist.model.checkpoint import checkpoint_exists
from lyricist.model.dynamic_eval import evaluate_checkpoint
from lyricist.model.scoring import score_text

from . import finetune
from .config import MIN_FINE_TUNING_BYTES, SHORT_BUDGET_MINUTES, TrainConfig, load_config
from .data import read_corpus
from .run_state import load_for_resume
from .trainer import Trainer


def add_train_command(subcommands: argparse._SubParsersAction) -> None:
    p = subcommands.add_parser("train", help="train a tokenizer and a model on a text file")
    p.add_argument("--corpus", required=True, metavar="FILE", help="any UTF-8 text file")
    p.add_argument("--out", required=True, metavar="DIR", help="checkpoint directory (written atomically)")
    p.add_argument("--valid", metavar="FILE", help="validation text (default: the corpus's last 10%%)")
    p.add_argument("--config", metavar="FILE.toml", help="settings; see docs/training.md")
    p.add_argument("--resume", action="store_true", help="continue the interrupted run in DIR")
    p.add_argument("--from", dest="base", metavar="DIR",
                   help=f"fine-tune a trained checkpoint: its tokenizer, weights and model, the fine-tuning preset "
                        f"(a corpus of at least {MIN_FINE_TUNING_BYTES // 1024} KB; docs/training.md)")
    p.add_argument("--max-minutes", type=float, metavar="M", help="wall-clock budget; ends with a checkpoint")
    p.add_argument("--seed", type=int, metavar="S")
    p.add_argument("--device", metavar="D", help="auto (default), cpu, cuda, cuda:N")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override one setting, e.g. --set optim.lr=0.001 (repeatable)")
    p.set_defaults(run=_run_train)


def add_eval_command(subcommands: argparse._SubParsersAction) -> None:
    p = subcommands.add_parser("eval", help="score a text file with a checkpoint (JSON figures)")
    p.add_argument("--model", required=True, metavar="DIR")
    p.add_argument("--text", required=True, metavar="FILE")
    d = p.add_argument_group("dynamic evaluation (docs/training.md): the model adapts to the text as it reads it")
    d.add_argument("--dynamic", action="store_true", help="score with dynamic evaluation (reported as such)")
    d.add_argument("--segment", type=int, metavar="N", help="pieces scored between two steps")
    d.add_argument("--lr", type=float, metavar="ETA", help="step size η")
    d.add_argument("--decay", type=float, metavar="LAMBDA", help="pull back to the trained weights, λ")
    d.add_argument("--eps", type=float, metavar="EPS", help="ε, relative to each weight's mean gradient RMS")
    d.add_argument("--stats-text", metavar="FILE",
                   help="training text to measure the gradient statistics on (default: those in the checkpoint)")
    d.add_argument("--save-stats", action="store_true", help="store the statistics and settings in the checkpoint")
    c = p.add_argument_group("the continuous cache (docs/memory.md): tuned on this text, which should be held out")
    c.add_argument("--tune-cache", action="store_true", help="find the cache's window, theta and lambda on the text")
    c.add_argument("--save-cache", action="store_true",
                   help="store them in the checkpoint (left off when the cache does not help)")
    p.add_argument("--threads", type=int, metavar="N", help="torch threads (default: torch's)")
    p.set_defaults(run=_run_eval)


def _run_train(args: argparse.Namespace) -> int:
    out = Path(args.out)
    overrides = list(args.set)
    if args.max_minutes is not None:
        overrides.append(f"optim.max_minutes={args.max_minutes}")
    if args.seed is not None:
        overrides.append(f"seed={args.seed}")
    if args.device:
        overrides.append(f'run.device="{args.device}"')
    corpus = read_corpus(args.corpus)
    if args.valid:
        corpus.validation = read_corpus(args.valid)
    command = "lyricist " + shlex.join(sys.argv[1:]) if sys.argv[0].endswith("lyricist") else ""
    if command and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        command = f"torchrun --nproc-per-node {os.environ.get('LOCAL_WORLD_SIZE', '?')} $(which lyricist) {command[9:]}"
    if args.resume:
        if not checkpoint_exists(out):
            raise ValueError(f"nothing to resume: {out} holds no checkpoint")
        saved = load_for_resume(out)
        finetune.resume(saved["state"].get("fine_tune"), args.base, corpus, args.corpus, out)
        config = TrainConfig.from_dict(saved["state"]["config"])
        config = load_config(None, overrides, base=config) if overrides else config
        if args.config:
            raise ValueError("--resume continues with the run's own config; leave out --config")
        trainer = Trainer(corpus, out, config, saved["state"]["command"] or command, resume_from=saved)
    else:
        # A fine-tune's corpus, base and settings are checked first, so a bad one is named even when OUT exists.
        fine_tuning = finetune.start(args.base, corpus, args.corpus, args.config, overrides) if args.base else None
        if checkpoint_exists(out):
            raise ValueError(f"{out} already holds a checkpoint: continue it with --resume, or choose another --out")
        if fine_tuning:
            config, base, fine_tune = fine_tuning
            trainer = Trainer(corpus, out, config, command, base=base.checkpoint, fine_tune=fine_tune)
        else:
            config = load_config(args.config, overrides)
            trainer = Trainer(corpus, out, config, command)
    if trainer.fine_tune and trainer.replicas.is_main:
        print(finetune.note(trainer.fine_tune), file=sys.stderr)
    if config.preset == "short" and trainer.replicas.is_main and not args.resume:
        print(f"a budget of at most {SHORT_BUDGET_MINUTES:g} minutes: the short-budget preset (lighter dropout, "
              "a higher learning rate; docs/training.md); --set preset=default keeps the defaults", file=sys.stderr)
    progress = trainer.run()
    if trainer.replicas.is_main:
        done = "finished" if progress.finished else "stopped"
        valid = f" --valid {args.valid}" if args.valid else ""
        hint = "" if progress.finished else f"; continue with: lyricist train --corpus {args.corpus}{valid} --out {out} --resume"
        print(f"{done} after {progress.step} steps ({progress.stop_reason}); checkpoint in {out}{hint}",
              file=sys.stderr)
    return 0


def _run_eval(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    checkpoint = load_checkpoint(args.model)
    corpus = read_corpus(args.text)
    if args.save_cache and not args.tune_cache:
        raise ValueError("--save-cache goes with --tune-cache")
    if args.tune_cache:
        from lyricist.model.cache_tuning import describe, save_cache_settings, tune

        best, figures = tune(checkpoint.model, checkpoint.tokenizer, corpus.text,
                             log=lambda line: print(line, file=sys.stderr, flush=True))
        print(describe(figures), file=sys.stderr)
        if args.save_cache:
            save_cache_settings(args.model, best, {**figures, "text": str(args.text)})
        print(json.dumps({k: v for k, v in figures.items() if k != "tried"}, indent=2))
        return 0
    if args.dynamic:
        stats_text = read_corpus(args.stats_text).text if args.stats_text else None
        metrics = evaluate_checkpoint(checkpoint, corpus.text, stats_text, args.save_stats,
                                      segment=args.segment, lr=args.lr, decay=args.decay, eps=args.eps)
    elif args.save_stats or any(v is not None for v in (args.segment, args.lr, args.decay, args.eps, args.stats_text)):
        raise ValueError("--segment, --lr, --decay, --eps, --stats-text and --save-stats go with --dynamic")
    else:
        metrics = score_text(checkpoint.model, checkpoint.tokenizer, corpus.text).metrics()
    print(json.dumps(metrics, indent=2))
    return 0
