"""The app factory: assembles the service from its parts (docs/architecture.md walks one request through them)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from .errors import declared_errors, install_error_handlers
from .metrics import Metrics
from .middleware import install_middleware
from .openapi import fit_openapi
from .registry import ModelRegistry
from .routes import completions, generate, health, models, predict, score, songwriting, embeddings
from .serving.adapt import Adapters
from .serving.predict import KeptPredictions
from .settings import Settings

V1_FAMILIES = (models, predict, generate, score, completions, songwriting, embeddings)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings.from_env()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await app.state.registry.load(settings, app.state.metrics)
        try:
            yield
        finally:
            await app.state.registry.stop(settings.request_timeout_s)

    app = FastAPI(title="Lyricist", lifespan=lifespan, docs_url="/docs", redoc_url=None)
    app.state.settings = settings
    app.state.registry = ModelRegistry()
    app.state.metrics = Metrics()
    app.state.adapters = Adapters()
    app.state.kept_predictions = KeptPredictions()
    install_middleware(app, settings, app.state.metrics)
    install_error_handlers(app)
    fit_openapi(app, settings)
    app.include_router(health.router)
    for family in V1_FAMILIES:
        app.include_router(family.router, prefix="/v1", responses=declared_errors(401, 503))
    app.mount("/static", StaticFiles(directory=health.STATIC), name="static")  # the demo page's script and style
    return app
