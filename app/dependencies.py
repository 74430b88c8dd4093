"""What route handlers are given (FastAPI `Depends`): the settings, the model registry, the metrics, and
the request's access-log notes. Async: FastAPI runs a plain `def` dependency in a worker thread, a hop
per request."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request

from .metrics import Metrics
from .registry import ModelRegistry
from .serving.adapt import Adapters
from .serving.predict import KeptPredictions
from .settings import Settings


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_registry(request: Request) -> ModelRegistry:
    return request.app.state.registry


async def get_metrics(request: Request) -> Metrics:
    return request.app.state.metrics


async def get_adapters(request: Request) -> Adapters:
    return request.app.state.adapters


async def get_kept_predictions(request: Request) -> KeptPredictions:
    return request.app.state.kept_predictions


async def get_notes(request: Request) -> dict[str, Any]:
    """The facts for this request's access-log line (model, token counts, the prompt), which the
    RequestLog middleware writes when the response ends."""
    return request.state.access


SettingsDep = Annotated[Settings, Depends(get_settings)]
RegistryDep = Annotated[ModelRegistry, Depends(get_registry)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
AdaptersDep = Annotated[Adapters, Depends(get_adapters)]
KeptPredictionsDep = Annotated[KeptPredictions, Depends(get_kept_predictions)]
NotesDep = Annotated[dict[str, Any], Depends(get_notes)]
