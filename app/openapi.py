"""The served OpenAPI document says what this server does, derived from the request models themselves:
no validation 422 (bad values are 400, declared per route; a 422 is only the songwriting routes' "constraints
cannot be met"), the configured limits (limits.py), and integer bounds
written exactly (FastAPI's document holds numbers as floats: the largest seed, 2**63 - 1, would read 2**63)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel

from . import limits
from . import protocol as p
from .settings import Settings

BOUNDS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")


def fit_openapi(app: FastAPI, settings: Settings) -> None:
    generated = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = generated()  # FastAPI keeps it in app.openapi_schema
            for operation in (o for path in document["paths"].values() for o in path.values()):
                if "HTTPValidationError" in str(operation["responses"].get("422")):  # FastAPI's, not a declared one
                    operation["responses"].pop("422")
            schemas = document["components"]["schemas"]
            for unused in ("HTTPValidationError", "ValidationError"):
                schemas.pop(unused, None)
            for model in request_bodies():
                if (schema := schemas.get(model.__name__)) is not None:  # FastAPI names a component by its class
                    _exact_integers(schema, model.model_json_schema())
                    limits.state_in_schema(model, schema, settings)
        return app.openapi_schema

    app.openapi = openapi


def request_bodies(base: type[BaseModel] = p.Request) -> list[type[BaseModel]]:
    """Every request body of the protocol: the subclasses of `protocol.Request`."""
    return [model for child in base.__subclasses__() for model in (child, *request_bodies(child))]


def _exact_integers(served: Any, exact: Any) -> None:
    """Copy the integer bounds of pydantic's own schema (`exact`) onto FastAPI's (`served`), part by part."""
    if not (isinstance(served, dict) and isinstance(exact, dict)):
        return
    if served.get("type") == "integer":
        served.update((key, exact[key]) for key in BOUNDS if key in exact)
    for name, prop in served.get("properties", {}).items():
        _exact_integers(prop, exact.get("properties", {}).get(name))
    for choice, exact_choice in zip(served.get("anyOf", []), exact.get("anyOf", [])):
        _exact_integers(choice, exact_choice)
    _exact_integers(served.get("items"), exact.get("items"))
