"""API keys: with LYRICIST_API_KEYS set, every /v1 route wants `Authorization: Bearer <key>`."""

from __future__ import annotations

import hmac
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute

from .errors import APIError
from .settings import Settings


async def require_api_key(request: Request, settings: Settings) -> None:
    if not settings.api_keys:
        return
    header = request.headers.get("authorization", "")
    given = header[7:].encode() if header.lower().startswith("bearer ") else b""
    # compare_digest against every key, so the time taken says nothing about which key nearly matched
    if not any([hmac.compare_digest(given, key.encode()) for key in settings.api_keys]):  # noqa: C419
        request.app.state.metrics.rejected.labels("auth").inc()
        raise APIError(401, "a valid API key is required: Authorization: Bearer <key>", code="invalid_api_key")


class KeyedRoute(APIRoute):
    """A route that checks the key before FastAPI reads and parses the body (a dependency would run only
    after): a client without a key cannot make the server read bodies up to the size limit."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def keyed(request: Request) -> Response:
            await require_api_key(request, request.app.state.settings)
            return await handler(request)

        return keyed
