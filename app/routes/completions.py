"""POST /v1/completions: OpenAI's Completions API, JSON or server-sent events."""

from __future__ import annotations

from fastapi import APIRouter, Request

from .. import protocol as p
from ..auth import KeyedRoute
from ..dependencies import NotesDep, RegistryDep, SettingsDep
from ..errors import declared_errors
from ..serving.completions import complete
from .delivery import STREAMED, deliver

router = APIRouter(route_class=KeyedRoute)


@router.post("/completions", response_model=p.CompletionResponse, response_model_exclude_none=True,
             responses={**declared_errors(400, 404, 413, 429, 504), **STREAMED})
async def completions(body: p.CompletionRequest, settings: SettingsDep, registry: RegistryDep, notes: NotesDep,
                      request: Request):
    return await deliver(request, await complete(body, settings, registry, notes))
