"""POST /v1/generate: JSON, or server-sent events with "stream": true."""

from __future__ import annotations

from fastapi import APIRouter, Request

from .. import protocol as p
from ..auth import KeyedRoute
from ..dependencies import NotesDep, RegistryDep, SettingsDep
from ..errors import declared_errors
from ..serving.generate import generate as serve_generate
from .delivery import STREAMED, deliver

router = APIRouter(route_class=KeyedRoute)


@router.post("/generate", response_model=p.GenerateResponse, response_model_exclude_none=True,
             responses={**declared_errors(400, 404, 413, 429, 504), **STREAMED})
async def generate(body: p.GenerateRequest, settings: SettingsDep, registry: RegistryDep, notes: NotesDep,
                   request: Request):
    return await deliver(request, await serve_generate(body, settings, registry, notes))
