"""The open routes: the demo page, liveness, readiness and the metrics; no key wanted."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .. import protocol as p
from ..dependencies import MetricsDep, RegistryDep
from ..errors import APIError, declared_errors

STATIC = Path(__file__).resolve().parents[1] / "static"

router = APIRouter()


@router.get("/", include_in_schema=False)
async def index() -> FileResponse:
    return FileResponse(STATIC / "index.html")


@router.get("/healthz", response_model=p.HealthResponse)
async def healthz() -> dict:
    return {"status": "ok"}


@router.get("/readyz", response_model=p.ReadyResponse, responses=declared_errors(503))
async def readyz(registry: RegistryDep) -> JSONResponse:
    if not registry.ready:
        return APIError(503, "not ready: the models are not loaded, or the server is shutting down",
                        code="not_ready").response()
    return JSONResponse({"status": "ready", "models": list(registry.by_name)})


@router.get("/metrics", response_class=PlainTextResponse, responses={200: {"description": "Prometheus text"}})
async def metrics(metrics: MetricsDep) -> Response:
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)
