"""The training loop: truncated BPTT with carried state, checkpoints that never lose work.

One `Trainer` per process; under torchrun each process trains on its own
rows of every batch and the gradients are averaged (DistributedDataParallel).
"""

from __future__ import annotations

import dataclasses
import json
import signal
import time
from collections import Counter
from pathlib import Path

import safetensors.torch
import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from lyricist.model import Checkpoint, LanguageModel, Tokenizer, load_checkpoint, save_checkpoint
from lyricist.model import dynamic_eval
from lyricist.model.checkpoint import stored_tensors
from lyricist.model.memory import State
from lyricist.model.network import in_reading_order
from lyricist.model.words import WORDS_FILE, count_words, read_words, words_bytes
from lyricist.model.scoring import score_text

from . import report
from .averaging import (asgd_average, make_optimizer, nt_asgd_switches, update_moving_average,
                        weights_replaced)
from .config import TrainConfig
from .data import BatchStream, Corpus, CorpusError
from .distributed import Replicas, pick_device
from .objective import Objective, bf16_runs_on
from .rename_speakers import SpeakerRenamer
from .run_state import (CARD_FILE, LOG_FILE, PLOT_FILE, STATE_FILE, TENSORS_FILE, Progress, join_optimizer_state,
                        split_optimizer_state)
from .schedule import budget_used, lr_factor, planned_steps
from .scheduled_sampling import mix_in_predictions, teacher_forcing_probability


class Trainer:
    def __init__(self, corpus: Corpus, out: Path, config: TrainConfig, command: str,
                 resume_from: dict | None = None, base: Checkpoint | None = None, fine_tune: dict | None = None):
        """`base`: the checkpoint a fine-tune starts from (its tokenizer and weights); `fine_tune`: what the
        run records about it (training/finetune.py), kept in the trainer state so a resume needs no --from."""
        self.corpus, self.out, self.config, self.command = corpus, out, config, command
        self.fine_tune = resume_from["state"].get("fine_tune") if resume_from else fine_tune
        device = pick_device(config.run.device)
        self.replicas = Replicas.start(device)
        if device.type == "cuda" and self.replicas.active:
            device = torch.device("cuda", self.replicas.local_rank)
        self.device = device
        if config.run.precision == "bf16" and not bf16_runs_on(device.type):
            raise ValueError(f"run.precision bf16: this machine's {device.type.upper()} cannot run the LSTM in "
                             "bfloat16 (a CPU needs AVX512-BF16 or AMX); train with run.precision=fp32")
        if config.run.threads:
            torch.set_num_threads(config.run.threads)
        elif self.replicas.active and device.type == "cpu":
            torch.set_num_threads(max(1, torch.get_num_threads() // self.replicas.world_size))
        torch.manual_seed(config.seed + self.replicas.rank)

        o = config.optim
        if o.batch_size % self.replicas.world_size:
            raise ValueError(f"optim.batch_size {o.batch_size} must divide among {self.replicas.world_size} processes")
        self.tokenizer = resume_from["tokenizer"] if resume_from else base.tokenizer if base else self._tokenizer()
        if not corpus.validation_text.strip():
            raise CorpusError("the corpus is too small to hold out a validation text (10% of it); "
                              "or give one with --valid FILE")
        train_ids = in_reading_order(config.model, self.tokenizer.encode(corpus.train_text, add_bos=True))
        rows = o.batch_size // self.replicas.world_size
        shard = slice(self.replicas.rank * rows, (self.replicas.rank + 1) * rows)
        epoch_ids = train_ids
        if o.rename_speakers:
            renamer = SpeakerRenamer(corpus.train_text, o.rename_speakers, config.seed)
            epoch_ids = lambda epoch: in_reading_order(  # noqa: E731
                config.model, self.tokenizer.encode(renamer.renamed(epoch), add_bos=True))
        self.stream = BatchStream(epoch_ids, o.batch_size, o.bptt, o.variable_bptt, config.seed, shard)
        self.chars_per_token = len(corpus.train_text) / len(train_ids)
        words = Counter(count_words(corpus.train_text))
        if base is not None:  # a fine-tune has read its base's text too
            words.update(read_words(base.path) or {})
        self.words = words_bytes(dict(words.most_common()), {"text": corpus.name})

        model_config = dataclasses.replace(config.model, vocab_size=self.tokenizer.vocab_size)
        self.model = resume_from["model"] if resume_from else LanguageModel(model_config)
        if base is not None and not resume_from:
            self.model.load_state_dict(base.model.state_dict())
        self.model.to(device).train()
        objective = Objective(self.model, o.ar, o.tar, bf16=self.config.run.precision == "bf16")
        self.objective = DistributedDataParallel(objective) if self.replicas.active else objective
        self.optimizer = make_optimizer(o, self.model.parameters(), averaging=False)
        self.progress = Progress()
        self.log: list[dict] = []
        self.state = self.model.initial_state(rows)
        self.best_weights: dict[str, Tensor] | None = None
        self.average: list[Tensor] | None = None  # the moving average, one tensor per parameter (optim.ema_decay)
        self.samples: list[str] = []
        self.plot_png: bytes | None = None
        if resume_from:
            self._restore(resume_from)
        self._stop_signal: int | None = None

    # -- the loop -----------------------------------------------------------------

    def run(self) -> Progress:
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            return self._loop()
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
            self.replicas.close()

    def _loop(self) -> Progress:
        # Closed however the run ends, so that an error message (a full disk) starts a line of its own.
        with tqdm(total=planned_steps(self.config.optim, self.stream.steps_per_epoch), initial=self.progress.step, unit="step", dynamic_ncols=True,
                  disable=not self.replicas.is_main, smoothing=0.1) as bar:
            return self._train(bar)

    def _train(self, bar: tqdm) -> Progress:
        o, r, p = self.config.optim, self.config.run, self.progress
        if self.fine_tune and not p.val_history:
            self._evaluate()  # the base on the held-out text: the figure to beat, and the best model until beaten
        started = time.monotonic() - p.elapsed_s
        last_save = last_eval = time.monotonic()
        window_started, window_tokens = time.monotonic(), 0
        while True:
            if self._budget_used() >= 1:
                p.stop_reason = "budget reached"
                break
            loss = self._step()
            p.step += 1
            now = time.monotonic()
            # One collective decides for every replica, so they all follow the same clock and stop,
            # evaluate and save at the same step (the schedule depends on the elapsed time).
            p.elapsed_s, due_eval, due_save, stopping = self.replicas.agree(
                now - started,
                p.step - p.last_eval_step >= r.eval_every_steps or now - last_eval >= r.eval_every_minutes * 60,
                now - last_save >= r.checkpoint_every_minutes * 60,
                self._stop_signal is not None,
            )
            p.window_loss += loss
            p.window_steps += 1
            window_tokens += self._last_tokens
            bar.update(1)
            if p.step % r.log_every_steps == 0:
                rate = window_tokens / max(now - window_started, 1e-9)
                loss = self.replicas.mean(p.window_loss / p.window_steps)
                self._record({"event": "train", "loss": loss, "tokens_per_s": rate, "lr": self._last_lr})
                bar.set_postfix(loss=f"{loss:.3f}", tok_s=f"{rate:,.0f}")
                bar.total = max(bar.n, int(p.step / max(self._budget_used(), 1e-9)))  # projected, for the ETA
                p.window_loss, p.window_steps = 0.0, 0
                window_started, window_tokens = now, 0
            if due_eval:
                self._evaluate()
                last_eval = last_save = time.monotonic()
                self._save()
                if o.patience and p.evals_since_best >= o.patience:
                    p.stop_reason = f"early stopping: no improvement in {o.patience} evaluations"
                    break
            elif due_save:
                last_save = time.monotonic()
                self._save()
            if stopping:
                p.stop_reason = "interrupted"
                bar.close()
                self._save()
                return p
        bar.close()
        if p.last_eval_step != p.step:
            self._evaluate()
        p.finished = True
        self._save()
        return p

    def _step(self) -> float:
        o, p = self.config.optim, self.progress
        inputs, targets, starts_epoch = self.stream.next_chunk()
        if starts_epoch:
            self.state = self.model.initial_state(self.state.count)  # a new pass over the text: nothing to carry
        inputs, targets = inputs.to(self.device), targets.to(self.device)
        inputs = mix_in_predictions(self.model, inputs, self.state.to(self.device),
                                    teacher_forcing_probability(o, p.step))
        lr = o.lr * lr_factor(o, p.step, self._budget_used())
        if o.variable_bptt:
            lr *= inputs.shape[1] / o.bptt  # AWD: a short chunk gets a proportionally smaller step
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        loss, cross_entropy, self.state = self.objective(inputs, targets, self.state.to(self.device))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(self.model.parameters(), o.clip)
        self.optimizer.step()
        if o.ema_decay:
            self.average, p.ema_updates = update_moving_average(self.average, self.model, o.ema_decay,
                                                                p.ema_updates)
        self._last_lr, self._last_tokens = lr, targets.numel() * self.replicas.world_size
        p.tokens += self._last_tokens
        return cross_entropy.item()

    def _budget_used(self) -> float:
        p = self.progress
        return budget_used(self.config.optim, p.step, p.elapsed_s, self.stream.epoch_progress)

    # -- evaluation -----------------------------------------------------------------

    def _evaluate(self) -> None:
        p, o = self.progress, self.config.optim
        self.replicas.check_in_sync(self.model)
        candidates = None  # the figures of the weights, and of their moving average when kept
        if self.replicas.is_main:
            candidates = {}
            for kind in ("raw", "ema") if self.average is not None else ("raw",):
                with self._weights_of(kind):
                    candidates[kind] = score_text(self.model, self.tokenizer, self.corpus.validation_text).metrics()
        candidates = self.replicas.share(candidates)
        kind = min(candidates, key=lambda k: candidates[k]["nats_per_char"])  # the raw weights win a tie
        metrics = candidates[kind]
        if self.replicas.is_main and self.config.run.samples_in_card:
            with self._weights_of(kind):
                self.samples = report.samples(self.model, self.tokenizer, self.config.run.samples_in_card)
                self.model.train()
        p.last_eval_step = p.step
        p.val_history.append(metrics["nats_per_char"])
        if metrics["nats_per_char"] < p.best_val:
            p.best_val, p.evals_since_best, p.best_weights_kind = metrics["nats_per_char"], 0, kind
            with self._weights_of(kind):
                self.best_weights = {k: v.detach().cpu().clone() for k, v in stored_tensors(self.model).items()}
        else:
            p.evals_since_best += 1
        averaged = {"weights": kind, "val_raw": candidates["raw"], "val_ema": candidates["ema"]} \
            if "ema" in candidates else {}
        self._record({"event": "eval", "val": metrics, **averaged})
        if nt_asgd_switches(o, p.averaging, p.val_history):
            p.averaging = True  # validation has stalled: start averaging (Merity et al. 2017)
            self.optimizer = make_optimizer(o, self.model.parameters(), averaging=True)
            self._record({"event": "averaging_started"})
        if self.replicas.is_main:
            tqdm.write(f"step {p.step}: validation {metrics['nats_per_char']:.4f} nats/char "
                       f"({metrics['bits_per_char']:.3f} bits/char, token ppl {metrics['perplexity']:.1f})"
                       + (f"; weights {candidates['raw']['nats_per_char']:.4f}, moving average "
                          f"{candidates['ema']['nats_per_char']:.4f}" if averaged else ""))

    def _weights_of(self, kind: str):
        """Evaluate with the weights (`raw`: under NT-ASGD, once it averages, the averaged SGD ones) or their
        moving average (`ema`)."""
        if kind == "ema":
            return weights_replaced(self.model, self.average)
        return weights_replaced(self.model, asgd_average(self.model, self.optimizer) if self.progress.averaging
                                else None)

    def _record(self, entry: dict) -> None:
        p = self.progress
        self.log.append({**entry, "step": p.step, "epoch": round(self.stream.epoch_progress, 4), "tokens": p.tokens,
                         "elapsed_s": round(p.elapsed_s, 2)})

    # -- checkpoints ----------------------------------------------------------------

    def _save(self) -> None:
        p = self.progress
        # The carried state of every replica's rows; its recurrent part is "hidden", as runs have always saved it.
        gathered = {name: self.replicas.gather(t.cpu()) for name, t in self.state.tensors().items()}
        hidden = State.stack([State.from_tensors({name: parts[rank] for name, parts in gathered.items()})
                              for rank in range(self.replicas.world_size)])
        rng = self.replicas.gather(torch.get_rng_state())
        if not self.replicas.is_main:
            self.replicas.barrier()
            return
        tensors = {("hidden" if name == "rnn" else f"hidden.{name}"): t for name, t in hidden.tensors().items()}
        tensors["rng.data"] = self.stream.generator.get_state()
        tensors.update({f"rng.torch.{rank}": state for rank, state in enumerate(rng)})
        optimizer_json, optimizer_tensors = split_optimizer_state(self.optimizer.state_dict())
        tensors.update(optimizer_tensors)
        # The weights are the best only at the step of the evaluation that found them, and not if the
        # best were the averaged ones (NT-ASGD's or the moving average).
        weights_are_best = (p.evals_since_best == 0 and p.last_eval_step == p.step and not p.averaging
                            and p.best_weights_kind != "ema")
        if self.best_weights is not None and not weights_are_best:
            tensors.update({f"best.{k}": v for k, v in self.best_weights.items()})
        if self.average is not None:
            names = [name for name, _ in self.model.named_parameters()]
            tensors.update({f"ema.{name}": average.detach().cpu() for name, average in zip(names, self.average)})
        state = {"progress": dataclasses.asdict(p), "data": self.stream.state(), "config": self.config.to_dict(),
                 "world_size": self.replicas.world_size, "optimizer": optimizer_json, "command": self.command,
                 "fine_tune": self.fine_tune}
        model = self.model
        if p.finished and self.best_weights is not None:
            model = LanguageModel(self.model.config)
            model.load_state_dict(self.best_weights, strict=False)
            tensors = {}  # a finished run keeps only what it made: the best model
        facts = self._facts()
        if self.log and (p.finished or self.log[-1]["event"] == "eval" or self.plot_png is None):
            self.plot_png = report.plot(self.log, self.chars_per_token)
        extra = {
            STATE_FILE: json.dumps(state, indent=1).encode(),
            LOG_FILE: "".join(json.dumps(e) + "\n" for e in self.log).encode(),
            CARD_FILE: report.model_card(self.out.name, facts, self.config.to_dict(), self.command,
                                         self.samples).encode(),
        }
        if tensors:
            extra[TENSORS_FILE] = safetensors.torch.save({k: v.contiguous() for k, v in tensors.items()})
        if p.finished and self.config.run.dynamic_stats_chars:
            extra[dynamic_eval.STATS_FILE] = self._dynamic_statistics(model)
        if self.plot_png:
            extra[PLOT_FILE] = self.plot_png
        extra[WORDS_FILE] = self.words
        save_checkpoint(self.out, model.cpu(), self.tokenizer, facts, extra)
        self.model.to(self.device)
        self.replicas.barrier()

    def _facts(self) -> dict:
        p = self.progress
        evals = [e["val"] for e in self.log if e["event"] == "eval"]
        best = min(evals, key=lambda v: v["nats_per_char"]) if evals else {}
        return {
            "corpus": self.corpus.name,
            "corpus_sha256": self.corpus.sha256,
            "corpus_chars": len(self.corpus.text),
            "validation_chars": len(self.corpus.validation_text),
            "tokenizer_model_type": self.config.tokenizer.model_type,
            "parameters": self.model.num_parameters(),
            "steps": p.step,
            "epochs": self.stream.epoch_progress,
            "tokens_seen": p.tokens,
            "train_minutes": p.elapsed_s / 60,
            "val": best,
            "val_nats_per_char": best.get("nats_per_char"),
            "hardware": report.hardware(),
            "processes": self.replicas.world_size,
            "finished": p.finished,
            "stop_reason": p.stop_reason,
            "seed": self.config.seed,
            "split": self.corpus.split_description,
            **report.averaging_facts(self.log, self.config.optim.ema_decay),
            **(report.fine_tune_facts(self.fine_tune, evals) if self.fine_tune else {}),
            "created": int(time.time()),
        }

    def _dynamic_statistics(self, model: LanguageModel) -> bytes:
        """Dynamic evaluation's normaliser (lyricist.model.dynamic_eval), measured once with the
        final weights on the end of the training text, so that the service can adapt without it."""
        text = self.corpus.train_text[-self.config.run.dynamic_stats_chars :]
        settings = dynamic_eval.DynamicSettings()
        stats = dynamic_eval.gradient_statistics(model, self.tokenizer, text, settings.segment)
        about = {"source": "training", "text": "the end of the training text", "chars": len(text),
                 "segment": settings.segment}
        return dynamic_eval.statistics_bytes(stats, settings, about)

    def _restore(self, saved: dict) -> None:
        state, tensors = saved["state"], saved["tensors"]
        if state["world_size"] != self.replicas.world_size:
            raise ValueError(f"this run was trained with {state['world_size']} processes; resume it with as many")
        self.progress = Progress(**state["progress"])
        if self.progress.averaging:
            self.optimizer = make_optimizer(self.config.optim, self.model.parameters(), averaging=True)
        self.optimizer.load_state_dict(join_optimizer_state(state["optimizer"], tensors))
        self.stream.restore(state["data"], tensors["rng.data"])
        rows = self.model.count_rows(self.state)
        rank = self.replicas.rank
        carried = State.from_tensors({"rnn": tensors["hidden"], **{name.removeprefix("hidden."): t for name, t in
                                                                   tensors.items() if name.startswith("hidden.")}})
        self.state = self.model.select_rows(carried, slice(rank * rows, (rank + 1) * rows)).map(torch.clone)
        torch.set_rng_state(tensors[f"rng.torch.{rank}"])
        self.log = saved["log"]
        best = {k.removeprefix("best."): v for k, v in tensors.items() if k.startswith("best.")}
        if best:
            self.best_weights = best
        elif self.progress.val_history:  # the saved weights were the best
            self.best_weights = {k: v.clone() for k, v in stored_tensors(self.model).items()}
        names = [name for name, _ in self.model.named_parameters()]
        if all(f"ema.{name}" in tensors for name in names):
            self.average = [tensors[f"ema.{name}"].to(self.device).clone() for name in names]
        else:  # none kept (or averaging switched on at this resume): it starts at the next step
            self.average, self.progress.ema_updates = None, 0
        self._stop_signal = None

    def _tokenizer(self) -> Tokenizer:
        t = self.config.tokenizer
        if t.reuse:
            path = Path(t.reuse)
            return load_checkpoint(path).tokenizer if path.is_dir() else Tokenizer.load(path)
        return Tokenizer.train(self.corpus.train_text, self.config.model.vocab_size, t.model_type)

    def _on_signal(self, signum, _frame) -> None:
        if self._stop_signal is not None:  # a second Ctrl-C: the user insists
            raise KeyboardInterrupt
        self._stop_signal = signum
        if self.replicas.is_main:
            tqdm.write("stopping: saving a checkpoint (press Ctrl-C again to abandon it)")

