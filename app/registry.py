"""The loaded models by name, each behind its engine. No HTTP here: errors.py says what a refusal answers."""

from __future__ import annotations

import asyncio
import gc
import logging
import time

import torch

from lyricist.model import load_forward_checkpoint

from .engine import ModelEngine
from .metrics import Metrics
from .settings import Settings

log = logging.getLogger("lyricist.server")


class ModelNotReady(Exception):
    """No model is loaded yet, or the server is stopping."""


class UnknownModel(LookupError):
    """No loaded model has that name."""


class ModelRegistry:
    """The loaded models; the first is the default."""

    def __init__(self):
        self.by_name: dict[str, ModelEngine] = {}
        self.created = int(time.time())
        self.ready = False

    @property
    def default(self) -> ModelEngine:
        return next(iter(self.by_name.values()))

    def loaded(self) -> dict[str, ModelEngine]:
        """The models that take requests: none until all are loaded, nor once the server stops."""
        if not self.ready:
            raise ModelNotReady("the server is not ready: no model is loaded yet")
        return self.by_name

    def get(self, name: str | None) -> ModelEngine:
        """The model called `name`, or the default for None."""
        loaded = self.loaded()
        if name is None:
            return self.default
        if name not in loaded:
            raise UnknownModel(f"model {name!r} is not loaded; GET /v1/models lists them")
        return loaded[name]

    async def load(self, settings: Settings, metrics: Metrics) -> None:
        """Load every configured checkpoint (off the event loop), start its engine, then be ready."""
        # The event loop's own torch work is small (a result's lists), and an OpenMP team of its own would slow
        # every engine worker's: their fused kernels ran 1.6x slower once this thread had used two threads
        # (docs/serving.md). The workers choose their own counts (LYRICIST_THREADS forces theirs).
        torch.set_num_threads(1)
        device = settings.torch_device()
        checkpoints = await asyncio.to_thread(_load_all, settings.models)
        for checkpoint in checkpoints:
            checkpoint.model.to(device)
            if checkpoint.backward is not None:
                checkpoint.backward.to(device)
            engine = ModelEngine(checkpoint, max_batch_size=settings.max_batch_size, max_queue=settings.max_queue,
                                 metrics=metrics, threads=settings.threads)
            if engine.name in self.by_name:
                raise ValueError(f"two checkpoints are both named {engine.name!r}: {settings.models}")
            self.by_name[engine.name] = engine
            metrics.model_info.labels(engine.name, checkpoint.model.config.cell,
                                      str(checkpoint.model.num_parameters())).set(1)
            engine.start()
        # What is loaded now lives as long as the process: keep it out of the collector's full passes, which
        # otherwise walk every module and tensor while a search allocates its nodes (py-spy: 7% of predict).
        gc.freeze()
        self.ready = True
        log.info("serving %s on %s", ", ".join(self.by_name), device)

    async def stop(self, timeout_s: float) -> None:
        """Refuse new work (/readyz says 503), then stop each engine, which ends what it still holds."""
        self.ready = False
        for engine in self.by_name.values():
            await asyncio.to_thread(engine.stop, timeout_s)


def _load_all(paths: tuple[str, ...]) -> list:
    torch.set_num_threads(1)  # this pool thread too: no OpenMP team beside the workers' (above)
    return [load_forward_checkpoint(path) for path in paths]
