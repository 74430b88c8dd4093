"""POST /v1/predict."""

from __future__ import annotations

from fastapi import APIRouter

from .. import protocol as p
from ..auth import KeyedRoute
from ..dependencies import KeptPredictionsDep, NotesDep, RegistryDep, SettingsDep
from ..errors import declared_errors
from ..serving.predict import predict as serve_predict

router = APIRouter(route_class=KeyedRoute)


@router.post("/predict", response_model=p.PredictResponse, response_model_exclude_none=True,
             responses=declared_errors(400, 404, 413, 422, 429))
async def predict(body: p.PredictRequest, settings: SettingsDep, registry: RegistryDep, kept: KeptPredictionsDep,
                  notes: NotesDep) -> p.PredictResponse:
    return await serve_predict(body, settings, registry, kept, notes)
