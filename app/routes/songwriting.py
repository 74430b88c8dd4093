"""POST /v1/analyze, /v1/lines, /v1/verse and /v1/alternatives (the songwriting constraints of /v1/predict are in predict.py)."""

from __future__ import annotations

from fastapi import APIRouter

from .. import protocol as p
from ..auth import KeyedRoute
from ..dependencies import NotesDep, RegistryDep, SettingsDep
from ..errors import declared_errors
from ..serving import songwriting

router = APIRouter(route_class=KeyedRoute)


@router.post("/analyze", response_model=p.AnalyzeResponse, responses=declared_errors(400, 404, 413, 429))
async def analyze(body: p.AnalyzeRequest, settings: SettingsDep, registry: RegistryDep,
                  notes: NotesDep) -> p.AnalyzeResponse:
    return await songwriting.analyze(body, settings, registry, notes)


@router.post("/lines", response_model=p.LinesResponse, response_model_exclude_none=True,
             responses=declared_errors(400, 404, 413, 422, 429, 504))
async def lines(body: p.LinesRequest, settings: SettingsDep, registry: RegistryDep,
                notes: NotesDep) -> p.LinesResponse:
    return await songwriting.lines(body, settings, registry, notes)


@router.post("/verse", response_model=p.VerseResponse, responses=declared_errors(400, 404, 413, 422, 429, 504))
async def verse(body: p.VerseRequest, settings: SettingsDep, registry: RegistryDep,
                notes: NotesDep) -> p.VerseResponse:
    return await songwriting.verse(body, settings, registry, notes)


@router.post("/alternatives", response_model=p.AlternativesResponse,
             responses=declared_errors(400, 404, 413, 422, 429, 504))
async def alternatives(body: p.AlternativesRequest, settings: SettingsDep, registry: RegistryDep,
                       notes: NotesDep) -> p.AlternativesResponse:
    return await songwriting.alternatives(body, settings, registry, notes)
