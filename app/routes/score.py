"""POST /v1/score."""

from __future__ import annotations

from fastapi import APIRouter

from .. import protocol as p
from ..auth import KeyedRoute
from ..dependencies import AdaptersDep, NotesDep, RegistryDep, SettingsDep
from ..errors import declared_errors
from ..serving.score import score as serve_score

router = APIRouter(route_class=KeyedRoute)


@router.post("/score", response_model=p.ScoreResponse, responses=declared_errors(400, 404, 413, 422, 429))
async def score(body: p.ScoreRequest, settings: SettingsDep, registry: RegistryDep, adapters: AdaptersDep,
                notes: NotesDep) -> p.ScoreResponse:
    return await serve_score(body, settings, registry, adapters, notes)
