"""What wraps every request: the access log, the request metrics, the body limit and CORS.

All pure ASGI: Starlette's `@app.middleware("http")` runs each request in a task group of its own and
cost about a millisecond a request (py-spy), a tenth of a next-word prediction.
"""

from __future__ import annotations

import copy
import json
import logging
import re
import time
import uuid
from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.datastructures import Headers
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import CLOSE, APIError
from .metrics import Metrics
from .settings import Settings

log = logging.getLogger("lyricist.server")
ACCESS_LOG = logging.getLogger("lyricist.access")
CLIENT_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")  # anything else is replaced, never echoed


def install_middleware(app: FastAPI, settings: Settings, metrics: Metrics) -> None:
    """The layers, outermost first. The log is outermost, so that every answer (a 500 too) has its id and
    its line; the metrics count every answer, the body limit's too; CORS answers preflights innermost,
    and only when origins are configured."""
    layers: list[tuple[type, dict[str, Any]]] = [
        (RequestLog, {"log_prompts": settings.log_prompts}),
        (RequestMetrics, {"metrics": metrics}),
        (BodyLimit, {"max_bytes": settings.max_body_bytes}),
    ]
    if settings.cors_origins:
        layers.append((EnvelopeCORS, {
            "allow_origins": list(settings.cors_origins), "allow_methods": ["GET", "POST"],
            "allow_headers": ["Authorization", "Content-Type", "X-Request-ID"],
            "expose_headers": ["X-Request-ID", "Retry-After"]}))
    for layer, options in reversed(layers):  # each one added wraps those added before it
        app.add_middleware(layer, **options)


class RequestLog:
    """Gives each request an id, echoed in X-Request-ID, and once the response has ended writes one JSON
    line about it to the "lyricist.access" logger, with the facts the handler noted in `scope["state"]["access"]`."""

    def __init__(self, app: ASGIApp, log_prompts: bool):
        self.app, self.log_prompts = app, log_prompts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        given = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        request_id = given if CLIENT_REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
        notes: dict[str, Any] = {}  # what the handler learns: model, token counts, the prompt
        scope.setdefault("state", {})["access"] = notes
        status: int | None = None  # until the response begins
        ended = left = False

        async def watching_receive() -> Message:
            nonlocal left
            message = await receive()
            left = left or message["type"] == "http.disconnect" and not ended
            return message

        async def send_with_id(message: Message) -> None:
            nonlocal status, ended
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
            ended = ended or message["type"] == "http.response.body" and not message.get("more_body", False)
            await send(message)

        try:
            await self.app(scope, watching_receive, send_with_id)
        except Exception:
            # Answered here rather than by Starlette's outermost handler, so the 500 has its X-Request-ID too.
            log.exception("unexpected error on %s %s (request %s)", scope["method"], scope["path"], request_id)
            if status is not None:  # the response had begun: all that can be done is to end the connection
                raise
            await APIError(500, "internal error; the server log has the details").response()(
                scope, receive, send_with_id)
        finally:
            line = {"id": request_id, "method": scope["method"], "path": scope["path"], "status": status or 500,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 1)}
            line.update((k, v) for k, v in notes.items() if k != "prompt" or self.log_prompts)
            if left or not ended:
                line["incomplete"] = True  # the client left, or the server failed, before the end
            ACCESS_LOG.info(json.dumps(line))


class RequestMetrics:
    """Counts every answer and times it to its last byte (a stream's too); every 413 is a refusal "too_large",
    whichever limit gave it, so it is counted here and nowhere else."""

    def __init__(self, app: ASGIApp, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # unless a response begins

        async def noting_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, noting_send)
        finally:
            # unknown paths would make unbounded labels; the router notes the route it matched in the scope
            endpoint = scope["path"] if scope.get("route") is not None else "unknown"
            self.metrics.requests.labels(endpoint, str(status)).inc()
            self.metrics.request_duration.labels(endpoint).observe(time.perf_counter() - started)
            if status == 413:
                self.metrics.rejected.labels("too_large").inc()


class BodyLimit:
    """Refuses a body announced past the limit before reading any of it, and stops reading one that passes
    the limit as it arrives: a chunked body has no Content-Length to refuse it by. The error is raised
    where the handler reads the body, which answers it like any other APIError."""

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length", b"")
        if length.isdigit() and int(length) > self.max_bytes:
            error = APIError(413, f"request body is {int(length)} bytes, the most accepted is {self.max_bytes}",
                             code="too_large", headers=CLOSE)
            await error.response()(scope, receive, send)
            return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise APIError(413, f"the request body is longer than {self.max_bytes} bytes, the most accepted",
                                   code="too_large", headers=CLOSE)
            return message

        await self.app(scope, counting_receive, send)


class EnvelopeCORS(CORSMiddleware):
    """Starlette's CORS, but a refused preflight gets the one error envelope, like every other error."""

    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code != 400:
            return response
        return APIError(400, f"CORS preflight refused: {bytes(response.body).decode()} "
                             f"(LYRICIST_CORS_ORIGINS lists the origins allowed)", code="cors_refused").response()


def uvicorn_log_config() -> dict[str, Any]:
    """uvicorn's logging, plus ours: "lyricist.*" beside uvicorn's own lines, and the access log
    (one JSON object a line, RequestLog) on stdout in place of uvicorn's."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["formatters"]["json_lines"] = {"format": "%(message)s"}
    config["handlers"]["json_lines"] = {"class": "logging.StreamHandler", "formatter": "json_lines",
                                        "stream": "ext://sys.stdout"}
    config["loggers"]["lyricist"] = {"handlers": ["default"], "level": "INFO", "propagate": False}
    config["loggers"]["lyricist.access"] = {"handlers": ["json_lines"], "level": "INFO", "propagate": False}
    return config
