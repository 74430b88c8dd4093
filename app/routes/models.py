"""GET /v1/models: the loaded models, in OpenAI's list shape with the facts of each network."""

from __future__ import annotations

from fastapi import APIRouter

from .. import protocol as p
from ..auth import KeyedRoute
from ..dependencies import RegistryDep

router = APIRouter(route_class=KeyedRoute)


@router.get("/models", response_model=p.ModelList)
async def models(registry: RegistryDep) -> p.ModelList:
    cards = []
    for name, engine in registry.loaded().items():
        c, training = engine.model.config, engine.checkpoint.training
        cards.append(p.ModelCard(
            id=name, created=registry.created, cell=c.cell, layers=c.layers, hidden_size=c.hidden_size,
            embedding_size=c.embedding_size, vocab_size=c.vocab_size, parameters=engine.model.num_parameters(),
            default=engine is registry.default, trained_on=training.get("corpus"),
            val_nats_per_char=training.get("val_nats_per_char"), start=engine.checkpoint.start_text))
    return p.ModelList(data=cards)
