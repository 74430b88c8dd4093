"""The training loop: truncated BPTT with carried state, checkpoints that never lose work.

One `Trainer` per process; under torchrun each process trains on its own
rows of every batch and the gradients are averaged (DistributedDataParallel).
"""

from __future__ import annotations

import dataclasses
import json
import math
import signal
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import safetensors.torch
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from lyricist.model import Checkpoint, LanguageModel, Tokenizer, load_checkpoint, save_checkpoint
from lyricist.model import dynamic_eval
from lyricist.model.checkpoint import read_extra_file, stored_tensors
from lyricist.model.scoring import score_text

from . import report
from .config import OptimSettings, TrainConfig
from .data import BatchStream, Corpus, CorpusError
from .rename_speakers import SpeakerRenamer
from .distributed import Replicas

STATE_FILE = "trainer_state.json"
TENSORS_FILE = "trainer_state.safetensors"
LOG_FILE = "metrics.jsonl"
PLOT_FILE = "training.png"
CARD_FILE = "README.md"


@dataclass
class Progress:
    """Everything about the run that is not a tensor; saved with every checkpoint."""

    step: int = 0
    tokens: int = 0
    elapsed_s: float = 0.0
    best_val: float = math.inf
    evals_since_best: int = 0
    val_history: list[float] = field(default_factory=list)
    averaging: bool = False  # NT-ASGD has switched to averaged SGD
    ema_updates: int = 0  # steps averaged into the exponential moving average of the weights (optim.ema_decay)
    best_weights_kind: str = ""  # which weights scored best: "raw", or "ema" (their moving average)
    last_eval_step: int = 0
    window_loss: float = 0.0  # the running sums of the current log window
    window_steps: int = 0
    finished: bool = False
    stop_reason: str = ""


class Objective(nn.Module):
    """Cross-entropy plus AR and TAR; a module of its own so DDP sees one forward."""

    def __init__(self, model: LanguageModel, ar: float, tar: float, bf16: bool = False):
        super().__init__()
        self.model, self.ar, self.tar, self.bf16 = model, ar, tar, bf16

    def forward(self, inputs: Tensor, targets: Tensor, state: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        # bf16: the products run in bfloat16, the weights, their updates and the loss stay float32
        with torch.autocast(inputs.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            features = self.model.features(inputs, state)
            logits = self.model.logits(features.dropped)
        dropped, hidden = features.dropped.float(), features.hidden.float()
        cross_entropy = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten())
        loss = cross_entropy
        if self.ar:
            loss = loss + self.ar * dropped.pow(2).mean()
        if self.tar and hidden.shape[1] > 1:
            loss = loss + self.tar * (hidden[:, 1:] - hidden[:, :-1]).pow(2).mean()
        return loss, cross_entropy.detach(), features.state.detach().float()


def teacher_forcing_probability(o: OptimSettings, step: int) -> float:
    """Scheduled sampling: the chance that an input is the true token (Bengio et al. 2015)."""
    if o.scheduled_sampling == "none":
        return 1.0
    if o.scheduled_sampling == "linear":
        value = o.ss_k - o.ss_c * step
    elif o.scheduled_sampling == "exponential":
        value = o.ss_k**step
    else:  # inverse sigmoid
        value = o.ss_k / (o.ss_k + math.exp(min(step / o.ss_k, 700)))
    return min(1.0, max(o.ss_min, value))


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"run.device must be auto, cpu, cuda or cuda:N, got {name!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"run.device is {name!r} but no CUDA GPU is available; use auto or cpu")
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"run.device must be auto, cpu, cuda or cuda:N, got {name!r}")
    return device


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
        train_ids = self.tokenizer.encode(corpus.train_text, add_bos=True)
        rows = o.batch_size // self.replicas.world_size
        shard = slice(self.replicas.rank * rows, (self.replicas.rank + 1) * rows)
        epoch_ids = train_ids
        if o.rename_speakers:
            renamer = SpeakerRenamer(corpus.train_text, o.rename_speakers, config.seed)
            epoch_ids = lambda epoch: self.tokenizer.encode(renamer.renamed(epoch), add_bos=True)  # noqa: E731
        self.stream = BatchStream(epoch_ids, o.batch_size, o.bptt, o.variable_bptt, config.seed, shard)
        self.chars_per_token = len(corpus.train_text) / len(train_ids)

        model_config = dataclasses.replace(config.model, vocab_size=self.tokenizer.vocab_size)
        self.model = resume_from["model"] if resume_from else LanguageModel(model_config)
        if base is not None and not resume_from:
            self.model.load_state_dict(base.model.state_dict())
        self.model.to(device).train()
        objective = Objective(self.model, o.ar, o.tar, bf16=self.config.run.precision == "bf16")
        self.objective = DistributedDataParallel(objective) if self.replicas.active else objective
        self.optimizer = self._optimizer(averaging=False)
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
        with tqdm(total=self._planned_steps(), initial=self.progress.step, unit="step", dynamic_ncols=True,
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
            self.state = torch.zeros_like(self.state)  # a new pass over the text: nothing to carry
        inputs, targets = inputs.to(self.device), targets.to(self.device)
        inputs = self._scheduled_sampling(inputs)
        lr = o.lr * self._lr_factor()
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
            self._update_average()
        self._last_lr, self._last_tokens = lr, targets.numel() * self.replicas.world_size
        p.tokens += self._last_tokens
        return cross_entropy.item()

    def _scheduled_sampling(self, inputs: Tensor) -> Tensor:
        """Parallel scheduled sampling: some inputs become the model's own prediction."""
        teacher_forcing = teacher_forcing_probability(self.config.optim, self.progress.step)
        if teacher_forcing >= 1 or inputs.shape[1] < 2:
            return inputs
        with torch.no_grad():
            logits, _ = self.model(inputs, self.state.to(self.device))
            predicted = torch.multinomial(torch.softmax(logits[:, :-1].flatten(0, 1), -1), 1).view(
                inputs.shape[0], -1)
        replace = torch.rand(predicted.shape, device=inputs.device) >= teacher_forcing
        mixed = inputs.clone()
        mixed[:, 1:] = torch.where(replace, predicted, inputs[:, 1:])
        return mixed

    # -- schedule and budgets -------------------------------------------------------

    def _budget_used(self) -> float:
        o, p = self.config.optim, self.progress
        fractions = [self.stream.epoch_progress / o.max_epochs]
        if o.max_steps:
            fractions.append(p.step / o.max_steps)
        if o.max_minutes:
            fractions.append(p.elapsed_s / (o.max_minutes * 60))
        return max(fractions)

    def _planned_steps(self) -> int:
        o = self.config.optim
        by_epochs = int(o.max_epochs * self.stream.steps_per_epoch)
        return min(by_epochs, o.max_steps) if o.max_steps else by_epochs

    def _lr_factor(self) -> float:
        o = self.config.optim
        warmup = min(1.0, (self.progress.step + 1) / o.warmup_steps) if o.warmup_steps else 1.0
        if o.schedule == "constant":
            return warmup
        progress = min(1.0, self._budget_used())
        return warmup * (o.min_lr_ratio + (1 - o.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))

    def _optimizer(self, averaging: bool) -> torch.optim.Optimizer:
        o, params = self.config.optim, self.model.parameters()
        if o.optimizer == "adamw":
            return torch.optim.AdamW(params, lr=o.lr, betas=o.betas, weight_decay=o.weight_decay)
        if averaging:
            return torch.optim.ASGD(params, lr=o.lr, t0=0, lambd=0.0, weight_decay=o.weight_decay)
        return torch.optim.SGD(params, lr=o.lr, weight_decay=o.weight_decay)

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
        if (o.optimizer == "nt-asgd" and not p.averaging and len(p.val_history) > o.nonmono
                and p.val_history[-1] > min(p.val_history[: -o.nonmono])):
            p.averaging = True  # validation has stalled: start averaging (Merity et al. 2017)
            self.optimizer = self._optimizer(averaging=True)
            self._record({"event": "averaging_started"})
        if self.replicas.is_main:
            tqdm.write(f"step {p.step}: validation {metrics['nats_per_char']:.4f} nats/char "
                       f"({metrics['bits_per_char']:.3f} bits/char, token ppl {metrics['perplexity']:.1f})"
                       + (f"; weights {candidates['raw']['nats_per_char']:.4f}, moving average "
                          f"{candidates['ema']['nats_per_char']:.4f}" if averaged else ""))

    def _update_average(self) -> None:
        """The exponential moving average of the weights, debiased as Adam debiases its moments: the
        average of every step's weights so far, step i weighted by decay^(steps since i), the weights
        summing to 1 (so early on it is not pulled towards the initial weights)."""
        p, decay = self.progress, self.config.optim.ema_decay
        p.ema_updates += 1
        params = [param.detach() for param in self.model.parameters()]
        if self.average is None:
            self.average = [param.clone() for param in params]
            p.ema_updates = 1
        else:
            torch._foreach_lerp_(self.average, params, (1 - decay) / (1 - decay**p.ema_updates))

    def _weights_of(self, kind: str):
        """Evaluate with the weights (`raw`; the averaged SGD ones under NT-ASGD) or their moving average (`ema`)."""
        return self._averaged_weights() if kind == "ema" else self._evaluation_weights()

    def _averaged_weights(self):
        return self._weights_replaced(self.average)

    def _evaluation_weights(self):
        """With averaged SGD, evaluate (and keep as best) the averaged weights."""
        if not self.progress.averaging:
            return nullcontext()
        return self._weights_replaced([self.optimizer.state.get(param, {}).get("ax")
                                       for param in self.model.parameters()])

    @contextmanager
    def _weights_replaced(self, replacements):
        """The model's weights replaced by `replacements` (None keeps a weight) until the block ends."""
        params = list(self.model.parameters())
        saved = [param.detach().clone() for param in params]
        with torch.no_grad():
            for param, replacement in zip(params, replacements):
                if replacement is not None:
                    param.copy_(replacement)
        try:
            yield
        finally:
            with torch.no_grad():
                for param, kept in zip(params, saved):
                    param.copy_(kept)

    def _record(self, entry: dict) -> None:
        p = self.progress
        self.log.append({**entry, "step": p.step, "epoch": round(self.stream.epoch_progress, 4), "tokens": p.tokens,
                         "elapsed_s": round(p.elapsed_s, 2)})

    # -- checkpoints ----------------------------------------------------------------

    def _save(self) -> None:
        p = self.progress
        hidden = self.model.stack_rows(self.replicas.gather(self.state.cpu()))
        rng = self.replicas.gather(torch.get_rng_state())
        if not self.replicas.is_main:
            self.replicas.barrier()
            return
        tensors = {"hidden": hidden, "rng.data": self.stream.generator.get_state()}
        tensors.update({f"rng.torch.{rank}": state for rank, state in enumerate(rng)})
        optimizer_json, optimizer_tensors = _split_optimizer_state(self.optimizer.state_dict())
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
            **self._averaging_facts(),
            **(self._fine_tune_facts(evals) if self.fine_tune else {}),
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

    def _averaging_facts(self) -> dict:
        """Which weights the checkpoint carries, when a moving average was kept beside them."""
        evals = [e for e in self.log if e["event"] == "eval"]
        best = min(evals, key=lambda e: e["val"]["nats_per_char"]) if evals else {}
        if not self.config.optim.ema_decay or "val_ema" not in best:  # (a fine-tune's base, before any step)
            return {}
        return {
            "weights": best["weights"],  # "ema": the checkpoint holds the moving average of the weights
            "ema_decay": self.config.optim.ema_decay,
            "val_raw_nats_per_char": best["val_raw"]["nats_per_char"],
            "val_ema_nats_per_char": best["val_ema"]["nats_per_char"],
        }

    def _fine_tune_facts(self, evals: list[dict]) -> dict:
        return {
            "fine_tuned_from": self.fine_tune["base"],
            "base_val_nats_per_char": evals[0]["nats_per_char"] if evals else None,  # step 0: the base itself
            "byte_fallback_share": self.fine_tune["byte_fallback_share"],
        }

    def _restore(self, saved: dict) -> None:
        state, tensors = saved["state"], saved["tensors"]
        if state["world_size"] != self.replicas.world_size:
            raise ValueError(f"this run was trained with {state['world_size']} processes; resume it with as many")
        self.progress = Progress(**state["progress"])
        if self.progress.averaging:
            self.optimizer = self._optimizer(averaging=True)
        self.optimizer.load_state_dict(_join_optimizer_state(state["optimizer"], tensors))
        self.stream.restore(state["data"], tensors["rng.data"])
        rows = self.model.count_rows(self.state)
        rank = self.replicas.rank
        self.state = self.model.select_rows(tensors["hidden"], slice(rank * rows, (rank + 1) * rows)).clone()
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


def load_for_resume(out: Path) -> dict:
    """What a resumed run needs from its checkpoint, every file verified."""
    checkpoint = load_checkpoint(out)
    state = json.loads(read_extra_file(out, STATE_FILE))
    if state["progress"]["finished"]:
        raise ValueError(f"the run in {out} has finished ({state['progress']['stop_reason']}); nothing to resume")
    tensors = safetensors.torch.load(read_extra_file(out, TENSORS_FILE))
    log = [json.loads(line) for line in read_extra_file(out, LOG_FILE).decode().splitlines()]
    checkpoint.model.train()
    return {"model": checkpoint.model, "tokenizer": checkpoint.tokenizer, "state": state, "tensors": tensors,
            "log": log}


def _split_optimizer_state(state: dict) -> tuple[dict, dict[str, Tensor]]:
    plain, tensors = {"param_groups": state["param_groups"], "state": {}}, {}
    for index, values in state["state"].items():
        plain["state"][str(index)] = {}
        for key, value in values.items():
            if isinstance(value, Tensor):
                tensors[f"optimizer.{index}.{key}"] = value.detach().cpu().contiguous()
            else:
                plain["state"][str(index)][key] = value
    return plain, tensors


def _join_optimizer_state(plain: dict, tensors: dict[str, Tensor]) -> dict:
    state = {int(index): dict(values) for index, values in plain["state"].items()}
    for name, tensor in tensors.items():
        if name.startswith("optimizer."):
            _, index, key = name.split(".", 2)
            state.setdefault(int(index), {})[key] = tensor
    groups = [{**g, "betas": tuple(g["betas"])} if "betas" in g else g for g in plain["param_groups"]]
    return {"state": state, "param_groups": groups}
