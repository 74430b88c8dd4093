"""POST /v1/embeddings and /v1/neighbours."""

from __future__ import annotations

from fastapi import APIRouter

from .. import protocol as p
from ..auth import KeyedRoute
from ..dependencies import NotesDep, RegistryDep, SettingsDep
from ..errors import declared_errors
from ..serving import embeddings as serving

router = APIRouter(route_class=KeyedRoute)


@router.post("/embeddings", response_model=p.EmbeddingsResponse, responses=declared_errors(400, 404, 413, 429))
async def embeddings(body: p.EmbeddingsRequest, settings: SettingsDep, registry: RegistryDep,
                     notes: NotesDep) -> p.EmbeddingsResponse:
    return await serving.embeddings(body, settings, registry, notes)


@router.post("/neighbours", response_model=p.NeighboursResponse, responses=declared_errors(400, 404, 429))
async def neighbours(body: p.NeighboursRequest, settings: SettingsDep, registry: RegistryDep,
                     notes: NotesDep) -> p.NeighboursResponse:
    return await serving.neighbours(body, settings, registry, notes)
