"""The bounds the settings put on request fields (`protocol.ServerLimit`): enforced here, and stated in
the served OpenAPI document, both read from the fields' own markers, so a renamed or new field keeps them."""

from __future__ import annotations

import functools
from typing import Any

from pydantic import BaseModel

from .errors import APIError
from .protocol import ServerLimit
from .settings import Settings


@functools.cache
def marked_fields(model: type[BaseModel]) -> tuple[tuple[str, str, ServerLimit], ...]:
    """(attribute, name in JSON, limit) of each field of `model` that a setting bounds, in field order."""
    return tuple((name, info.alias or name, limit) for name, info in model.model_fields.items()
                 for limit in info.metadata if isinstance(limit, ServerLimit))


def configured(limit: ServerLimit, settings: Settings) -> int:
    return settings.max_prompt_chars if limit is ServerLimit.PROMPT_CHARS else settings.max_new_tokens


def check(body: BaseModel, settings: Settings) -> None:
    """Refuse a body past a configured bound: a text too long is 413, a token count past the cap 400.
    Fields are checked in the order the model declares them, so every route reports the same first."""
    for attribute, field, limit in marked_fields(type(body)):
        value, most = getattr(body, attribute), configured(limit, settings)
        if limit is ServerLimit.PROMPT_CHARS:
            for text in [value] if isinstance(value, str) else value:
                if len(text) > most:
                    raise APIError(413, f"{field} has {len(text)} characters, the most accepted is {most}",
                                   field, "too_large")
        elif attribute in body.model_fields_set and value is not None and value > most:
            raise APIError(400, f"{field} must be at most {most}, got {value}", field, "invalid_value")


def new_tokens(body: BaseModel, settings: Settings) -> int:
    """The tokens `body` asks for: its count, or, left out (or null), its default but at most the cap."""
    (attribute,) = [a for a, _, limit in marked_fields(type(body)) if limit is ServerLimit.NEW_TOKENS]
    value = getattr(body, attribute)
    if attribute not in body.model_fields_set or value is None:
        return min(type(body).model_fields[attribute].default, settings.max_new_tokens)
    return value


def state_in_schema(model: type[BaseModel], schema: dict[str, Any], settings: Settings) -> None:
    """Write the configured bounds into `model`'s JSON schema (a component of the OpenAPI document)."""
    for attribute, field, limit in marked_fields(model):
        prop, most = schema["properties"][field], configured(limit, settings)
        if limit is ServerLimit.PROMPT_CHARS:
            _set(prop, "string", "maxLength", most)
        else:
            _set(prop, "integer", "maximum", most)
            prop["default"] = min(model.model_fields[attribute].default, most)


def _set(schema: dict[str, Any], kind: str, key: str, value: int) -> None:
    """Set `key` on every `kind` in a property's schema: the type itself, its anyOf choices, array items."""
    if schema.get("type") == kind:
        schema[key] = value
    for inner in [*schema.get("anyOf", []), *([schema["items"]] if "items" in schema else [])]:
        _set(inner, kind, key, value)
