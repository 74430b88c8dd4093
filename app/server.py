"""The FastAPI application: HTTP in front of one `ModelEngine` per loaded checkpoint (API.md)."""

from __future__ import annotations

import asyncio
import copy
import gc
import hmac
import json
import logging
import math
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import torch
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lyricist.model import SamplingParams, load_checkpoint
from lyricist.model.sampling import MAX_SEED
from lyricist.model.scoring import Score

from . import protocol as p
from .engine import Finished, GenerationRequest, ModelEngine, QueueFull, ShuttingDown, Stream, TokenEvent
from .metrics import Metrics
from .settings import Settings

log = logging.getLogger("lyricist.server")
STATIC = Path(__file__).parent / "static"
RETRY_AFTER_S = 1
ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
               413: "invalid_request_error", 429: "rate_limit_error", 503: "service_unavailable", 504: "timeout"}
ERROR_MEANINGS = {
    400: "a malformed or out-of-range value; the message names the field and the allowed range",
    401: "an API key is required and was missing or wrong",
    404: "unknown model",
    413: "the body or the prompt is longer than the configured limit",
    429: "the waiting queue is full; try again after Retry-After seconds",
    503: "not ready (no model loaded yet), or shutting down",
    504: "the request was still unfinished after LYRICIST_REQUEST_TIMEOUT_S",
}
ACCESS_LOG = logging.getLogger("lyricist.access")
CLOSE = {"Connection": "close"}  # after a 413: the rest of that body is not worth reading
CLIENT_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")  # anything else is replaced, never echoed


class APIError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.headers = status, message, param, code, headers


def error_response(status: int, message: str, param: str | None = None, code: str | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    body = p.ErrorResponse(error=p.ErrorBody(message=message, type=ERROR_TYPES.get(status, "server_error"),
                                             param=param, code=code))
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


def declared_errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI `responses` of these statuses: each is the one error envelope."""
    responses: dict[int | str, dict[str, Any]] = {
        status: {"model": p.ErrorResponse, "description": ERROR_MEANINGS[status]} for status in statuses}
    if 429 in responses:
        responses[429]["headers"] = {"Retry-After": {"description": "seconds", "schema": {"type": "integer"}}}
    return responses


STREAMED = {200: {"description": 'JSON, or with "stream": true server-sent events (API.md)',
                  "content": {"text/event-stream": {"schema": {  # one event: its data is JSON, or [DONE] at the end
                      "type": "object", "required": ["data"], "properties": {"data": {"type": "string"}}}}}}}


class EnvelopeCORS(CORSMiddleware):
    """Starlette's CORS, but a refused preflight gets the one error envelope, like every other error."""

    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code != 400:
            return response
        return error_response(400, f"CORS preflight refused: {bytes(response.body).decode()} "
                                   f"(LYRICIST_CORS_ORIGINS lists the origins allowed)", code="cors_refused")


class BodyTooLarge(StarletteHTTPException):
    """The body passed the limit while it was being read (BodyLimit counts it)."""

    def __init__(self, limit: int):
        super().__init__(413, f"the request body is longer than {limit} bytes, the most accepted")


class BodyLimit:
    """Counts a request body's bytes as they arrive and stops reading past the limit: a chunked body has
    no Content-Length to refuse it by. Pure ASGI and inside the metrics middleware, so that the error
    reaches the handler that reads the body as it is, not wrapped in that middleware's task group."""

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        await self.app(scope, counting_receive, send)


class LimitsAndMetrics:
    """Refuses a body announced past the limit before reading it, and counts every request in the metrics.
    Pure ASGI: Starlette's `@app.middleware("http")` runs each request in a task group of its own and cost
    about a millisecond a request (py-spy), a tenth of a next-word prediction."""

    def __init__(self, app: ASGIApp, settings: Settings, metrics: Metrics):
        self.app, self.settings, self.metrics = app, settings, metrics

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

        length = dict(scope["headers"]).get(b"content-length", b"")
        limit = self.settings.max_body_bytes
        try:
            if length.isdigit() and int(length) > limit:
                self.metrics.rejected.labels("too_large").inc()
                response = error_response(413, f"request body is {int(length)} bytes, the most accepted is {limit}",
                                          code="too_large", headers=CLOSE)
                await response(scope, receive, noting_send)
            else:
                await self.app(scope, receive, noting_send)
        finally:
            # unknown paths would make unbounded labels; the router notes the route it matched in the scope
            endpoint = scope["path"] if scope.get("route") is not None else "unknown"
            self.metrics.requests.labels(endpoint, str(status)).inc()
            self.metrics.request_duration.labels(endpoint).observe(time.perf_counter() - started)


class RequestLog:
    """Outermost middleware (pure ASGI): gives each request an id, echoed in X-Request-ID, and once the
    response has ended writes one JSON line about it to the "lyricist.access" logger."""

    def __init__(self, app: ASGIApp, settings: Settings):
        self.app, self.settings = app, settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        given = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        request_id = given if CLIENT_REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
        notes: dict[str, Any] = {}  # what the handler learns: model, token counts, the prompt (see _note)
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
            await error_response(500, "internal error; the server log has the details")(scope, receive, send_with_id)
        finally:
            line = {"id": request_id, "method": scope["method"], "path": scope["path"], "status": status or 500,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 1)}
            line.update((k, v) for k, v in notes.items() if k != "prompt" or self.settings.log_prompts)
            if left or not ended:
                line["incomplete"] = True  # the client left, or the server failed, before the end
            ACCESS_LOG.info(json.dumps(line))


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


class Engines:
    """The loaded models by name; the first is the default."""

    def __init__(self):
        self.by_name: dict[str, ModelEngine] = {}
        self.created = int(time.time())
        self.ready = False

    @property
    def default(self) -> ModelEngine:
        return next(iter(self.by_name.values()))

    def get(self, name: str | None) -> ModelEngine:
        if not self.ready:
            raise APIError(503, "the server is not ready: no model is loaded yet", code="not_ready")
        if name is None:
            return self.default
        if name not in self.by_name:
            raise APIError(404, f"model {name!r} is not loaded; GET /v1/models lists them", "model", "model_not_found")
        return self.by_name[name]


# The dependencies are async: FastAPI runs a plain `def` one in a worker thread, a hop per request.
async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_engines(request: Request) -> Engines:
    return request.app.state.engines


async def require_api_key(request: Request, settings: Annotated[Settings, Depends(get_settings)]) -> None:
    if not settings.api_keys:
        return
    header = request.headers.get("authorization", "")
    given = header[7:].encode() if header.lower().startswith("bearer ") else b""
    # compare_digest against every key, so the time taken says nothing about which key nearly matched
    if not any([hmac.compare_digest(given, key.encode()) for key in settings.api_keys]):  # noqa: C419
        request.app.state.metrics.rejected.labels("auth").inc()
        raise APIError(401, "a valid API key is required: Authorization: Bearer <key>", code="invalid_api_key")


SettingsDep = Annotated[Settings, Depends(get_settings)]
EnginesDep = Annotated[Engines, Depends(get_engines)]


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings.from_env()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        torch.set_num_threads(settings.threads)
        engines: Engines = app.state.engines
        checkpoints = await asyncio.to_thread(lambda: [load_checkpoint(path) for path in settings.models])
        for checkpoint in checkpoints:
            engine = ModelEngine(checkpoint, max_batch_size=settings.max_batch_size, max_queue=settings.max_queue,
                                 metrics=app.state.metrics)
            if engine.name in engines.by_name:
                raise ValueError(f"two checkpoints are both named {engine.name!r}: {settings.models}")
            engines.by_name[engine.name] = engine
            config = checkpoint.model.config
            app.state.metrics.model_info.labels(engine.name, config.cell, str(checkpoint.model.num_parameters())).set(1)
            engine.start()
        # What is loaded now lives as long as the process: keep it out of the collector's full passes, which
        # otherwise walk every module and tensor while a search allocates its nodes (py-spy: 7% of predict).
        gc.freeze()
        engines.ready = True
        log.info("serving %s", ", ".join(engines.by_name))
        try:
            yield
        finally:
            engines.ready = False  # /readyz says 503 and new work is refused from here on
            for engine in engines.by_name.values():
                await asyncio.to_thread(engine.stop, settings.request_timeout_s)

    app = FastAPI(title="Lyricist", lifespan=lifespan, docs_url="/docs", redoc_url=None)
    app.state.settings = settings
    app.state.engines = Engines()
    app.state.metrics = Metrics()
    if settings.cors_origins:
        app.add_middleware(EnvelopeCORS, allow_origins=list(settings.cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type", "X-Request-ID"],
                           expose_headers=["X-Request-ID", "Retry-After"])
    _add_error_handlers(app)
    _add_http_middleware(app)
    _fit_openapi(app, settings)
    app.include_router(_open_routes())
    app.include_router(_api_routes(), prefix="/v1", dependencies=[Depends(require_api_key)],
                       responses=declared_errors(401, 503))
    app.mount("/static", StaticFiles(directory=STATIC), name="static")  # the demo page's script and style
    return app


# -- errors, limits, metrics ------------------------------------------------------------

def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def api_error(request: Request, error: APIError) -> JSONResponse:
        return error_response(error.status, error.message, error.param, error.code, error.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        request.app.state.metrics.rejected.labels("validation").inc()
        content_type = request.headers.get("content-type", "")
        if request.method == "POST" and "json" not in content_type:
            # curl -d sends a form; say what the body must be rather than how it failed to parse.
            return error_response(400, f"the request body must be JSON sent with Content-Type: application/json, "
                                       f"got {content_type or 'no content type'}", None, "invalid_content_type")
        problems, param = [], None
        for e in error.errors():
            field = ".".join(str(part) for part in e["loc"] if part != "body")
            param = param or field or None
            got = f", got {e['input']!r}" if "input" in e and e["type"] != "missing" else ""
            problems.append(f"{field or 'body'}: {e['msg']}{got}"[:300])
        return error_response(400, "; ".join(problems), param, "invalid_value")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        if isinstance(error, BodyTooLarge):
            request.app.state.metrics.rejected.labels("too_large").inc()
            return error_response(413, error.detail, code="too_large", headers=CLOSE)
        message = f"no such path: {request.url.path}" if error.status_code == 404 else str(error.detail)
        if error.status_code == 400 and error.__cause__ is not None:  # FastAPI could not decode the JSON body
            message = f"the request body is not JSON in UTF-8: {error.__cause__}"[:300]
        return error_response(error.status_code, message, headers=getattr(error, "headers", None))


def _add_http_middleware(app: FastAPI) -> None:
    settings: Settings = app.state.settings
    metrics: Metrics = app.state.metrics

    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)  # before the next: it runs inside it

    app.add_middleware(LimitsAndMetrics, settings=settings, metrics=metrics)
    app.add_middleware(RequestLog, settings=settings)  # added last, so it is the outermost


def _fit_openapi(app: FastAPI, settings: Settings) -> None:
    """The served document says what this server does: no 422 (bad values are 400, declared per route),
    the configured limits on prompts and token counts (past them: 413, 400), the token defaults as
    capped, and the largest seed exactly."""
    generated = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = generated()  # FastAPI keeps it in app.openapi_schema
            for operation in (o for path in document["paths"].values() for o in path.values()):
                operation["responses"].pop("422", None)
            schemas = document["components"]["schemas"]
            for unused in ("HTTPValidationError", "ValidationError"):
                schemas.pop(unused, None)
            for model, field in (("PredictRequest", "prompt"), ("GenerateRequest", "prompt"),
                                 ("ScoreRequest", "text"), ("CompletionRequest", "prompt")):
                _limit(schemas[model]["properties"][field], "string", "maxLength", settings.max_prompt_chars)
            for model in ("GenerateRequest", "CompletionRequest"):  # pydantic writes 2**63 - 1 as a float, 2**63
                _limit(schemas[model]["properties"]["seed"], "integer", "maximum", MAX_SEED)
            for model, field in (("GenerateRequest", "max_new_tokens"), ("CompletionRequest", "max_tokens")):
                tokens = schemas[model]["properties"][field]
                _limit(tokens, "integer", "maximum", settings.max_new_tokens)
                tokens["default"] = min(tokens["default"], settings.max_new_tokens)
        return app.openapi_schema

    app.openapi = openapi


def _limit(schema: dict[str, Any], kind: str, key: str, value: int) -> None:
    """Set `key` on every `kind` in a property's schema: the type itself, its anyOf choices, array items."""
    if schema.get("type") == kind:
        schema[key] = value
    for inner in [*schema.get("anyOf", []), *([schema["items"]] if "items" in schema else [])]:
        _limit(inner, kind, key, value)


def _note(request: Request, **facts: Any) -> None:
    """Facts for this request's access-log line, which RequestLog writes when the response ends."""
    request.state.access.update(facts)


def _check_prompt(settings: Settings, metrics: Metrics, text: str, field: str) -> None:
    if len(text) > settings.max_prompt_chars:
        metrics.rejected.labels("too_large").inc()
        raise APIError(413, f"{field} has {len(text)} characters, the most accepted is {settings.max_prompt_chars}",
                       field, "too_large")


def _asked_tokens(settings: Settings, body: p.GenerateRequest | p.CompletionRequest, field: str) -> int:
    """max_new_tokens / max_tokens: past the cap a 400; left out (or null), the default, but at most the cap."""
    value = getattr(body, field)
    if field not in body.model_fields_set or value is None:
        return min(type(body).model_fields[field].default, settings.max_new_tokens)
    if value > settings.max_new_tokens:
        raise APIError(400, f"{field} must be at most {settings.max_new_tokens}, got {value}", field, "invalid_value")
    return value


def _sampling(request: p.SamplingFields) -> SamplingParams:
    try:
        return SamplingParams(**request.model_dump(include=set(p.SamplingFields.model_fields)))
    except ValueError as error:
        raise APIError(400, str(error), code="invalid_value") from None


def _submit(engine: ModelEngine, settings: Settings, request: GenerationRequest) -> Stream:
    try:
        return engine.submit(request, settings.request_timeout_s)
    except QueueFull as error:
        raise APIError(429, str(error), code="queue_full", headers={"Retry-After": str(RETRY_AFTER_S)}) from None
    except ShuttingDown as error:
        raise APIError(503, str(error), code="shutting_down") from None


async def _engine_call(engine: ModelEngine, awaitable: Awaitable) -> Any:
    try:
        return await awaitable
    except QueueFull as error:
        raise APIError(429, str(error), code="queue_full", headers={"Retry-After": str(RETRY_AFTER_S)}) from None
    except ShuttingDown as error:
        raise APIError(503, str(error), code="shutting_down") from None


def _check_finish(finished: Finished) -> None:
    if finished.reason == "timeout":
        raise APIError(504, "the request took longer than LYRICIST_REQUEST_TIMEOUT_S", code="timeout")
    if finished.reason == "shutdown":
        raise APIError(503, "the server shut down before the request finished", code="shutting_down")
    if finished.reason == "error":
        raise APIError(500, "the model step failed; the server log has the details", code="engine_error")


async def _until_disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _results_or_cancel(request: Request, streams: list[Stream]) -> list[tuple[list[TokenEvent], Finished]]:
    """Every stream's result; if the client leaves first, cancel them all (their slots free at once)."""
    gather = asyncio.ensure_future(asyncio.gather(*(s.result() for s in streams)))
    watch = asyncio.ensure_future(_until_disconnected(request))
    try:
        await asyncio.wait({gather, watch}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watch.cancel()
        if not gather.done():
            gather.cancel()
            for stream in streams:
                stream.cancel()
    if not gather.done() or gather.cancelled():
        raise APIError(499, "client disconnected")
    return gather.result()


def _sse(data: Any) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def _logprob_value(x: float) -> float:
    return x if math.isfinite(x) else -1e30  # JSON has no -inf


# -- open routes ---------------------------------------------------------------------------

def _open_routes() -> APIRouter:
    router = APIRouter()

    @router.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @router.get("/healthz", response_model=p.HealthResponse)
    async def healthz() -> dict:
        return {"status": "ok"}

    @router.get("/readyz", response_model=p.ReadyResponse, responses=declared_errors(503))
    async def readyz(engines: EnginesDep) -> JSONResponse:
        if not engines.ready:
            return error_response(503, "not ready: the models are not loaded, or the server is shutting down",
                                  code="not_ready")
        return JSONResponse({"status": "ready", "models": list(engines.by_name)})

    @router.get("/metrics", response_class=PlainTextResponse, responses={200: {"description": "Prometheus text"}})
    async def metrics(request: Request) -> Response:
        return Response(generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return router


# -- /v1 -------------------------------------------------------------------------------------

def _api_routes() -> APIRouter:
    router = APIRouter()

    @router.get("/models", response_model=p.ModelList)
    async def models(engines: EnginesDep) -> p.ModelList:
        engines.get(None)
        cards = []
        for index, (name, engine) in enumerate(engines.by_name.items()):
            c, training = engine.model.config, engine.checkpoint.training
            cards.append(p.ModelCard(
                id=name, created=engines.created, cell=c.cell, layers=c.layers, hidden_size=c.hidden_size,
                embedding_size=c.embedding_size, vocab_size=c.vocab_size, parameters=engine.model.num_parameters(),
                default=index == 0, trained_on=training.get("corpus"), val_nats_per_char=training.get("val_nats_per_char")))
        return p.ModelList(data=cards)

    @router.post("/predict", response_model=p.PredictResponse, responses=declared_errors(400, 404, 413, 429))
    async def predict(body: p.PredictRequest, settings: SettingsDep, engines: EnginesDep, request: Request):
        _check_prompt(settings, request.app.state.metrics, body.prompt, "prompt")
        engine = engines.get(body.model)  # after the checks of values: a bad value is a 400 whatever the model
        _note(request, model=engine.name, prompt=body.prompt)
        result = await _engine_call(engine, engine.predict(body.prompt, body.top_k, body.unit, body.temperature))
        _note(request, prompt_tokens=result.prompt_tokens)
        return p.PredictResponse(
            model=engine.name, unit=result.unit, prompt_tokens=result.prompt_tokens, coverage=result.coverage,
            entropy=result.entropy, exact=result.exact,
            distribution=[p.Candidate(text=t, prob=pr, logprob=_logprob_value(math.log(pr) if pr > 0 else -math.inf))
                          for t, pr in result.distribution])

    @router.post("/generate", response_model=p.GenerateResponse, response_model_exclude_none=True,
                 responses={**declared_errors(400, 404, 413, 429, 504), **STREAMED})
    async def generate(body: p.GenerateRequest, settings: SettingsDep, engines: EnginesDep, request: Request):
        _check_prompt(settings, request.app.state.metrics, body.prompt, "prompt")
        max_new_tokens, params = _asked_tokens(settings, body, "max_new_tokens"), _sampling(body)
        engine = engines.get(body.model)
        _note(request, model=engine.name, prompt=body.prompt)
        stream = _submit(engine, settings, GenerationRequest(
            body.prompt, max_new_tokens, params, tuple(body.stop), body.logprobs or None, incremental=body.stream))
        _note(request, prompt_tokens=stream.prompt_tokens)
        if body.stream:
            return StreamingResponse(_generate_events(stream, body.logprobs > 0, request.state.access),
                                     media_type="text/event-stream", headers=SSE_HEADERS)
        ((tokens, finished),) = await _results_or_cancel(request, [stream])
        _note(request, completion_tokens=finished.completion_tokens)
        _check_finish(finished)
        return p.GenerateResponse(
            id=stream.id, model=engine.name, text=finished.text, seed=stream.seed, finish_reason=finished.reason,
            usage=p.GenerateUsage(prompt_tokens=stream.prompt_tokens, completion_tokens=finished.completion_tokens),
            tokens=[_generated_token(t) for t in tokens] if body.logprobs else None)

    @router.post("/score", response_model=p.ScoreResponse, responses=declared_errors(400, 404, 413, 429))
    async def score(body: p.ScoreRequest, settings: SettingsDep, engines: EnginesDep, request: Request):
        _check_prompt(settings, request.app.state.metrics, body.text, "text")
        engine = engines.get(body.model)
        _note(request, model=engine.name, prompt=body.text)
        score = await _engine_call(engine, engine.score(body.text))
        figures = score.metrics()
        _note(request, prompt_tokens=figures["tokens"])
        return p.ScoreResponse(
            model=engine.name, tokens=figures["tokens"], chars=figures["chars"], nll=figures["nll"],
            nats_per_char=figures["nats_per_char"] if body.text else None,
            perplexity=figures["perplexity"] if score.token_ids else None,
            token_logprobs=[p.TokenLogprob(text=engine.tokenizer.decode([i]), logprob=lp)
                            for i, lp in zip(score.token_ids, score.logprobs.tolist())])

    @router.post("/completions", response_model=p.CompletionResponse, response_model_exclude_none=True,
                 responses={**declared_errors(400, 404, 413, 429, 504), **STREAMED})
    async def completions(body: p.CompletionRequest, settings: SettingsDep, engines: EnginesDep, request: Request):
        for name in ("presence_penalty", "frequency_penalty"):
            if getattr(body, name):
                raise APIError(400, f"{name} is not supported (use repetition_penalty); it must be 0", name,
                               "unsupported")
        max_tokens = _asked_tokens(settings, body, "max_tokens")
        for prompt in body.prompts:
            _check_prompt(settings, request.app.state.metrics, prompt, "prompt")
        params = _sampling(body)
        engine = engines.get(body.model)
        _note(request, model=engine.name, prompt=body.prompt)
        jobs = []  # (choice index, prompt) in OpenAI's order: prompt-major, then n
        for prompt in body.prompts:
            jobs.extend((len(jobs), prompt) for _ in range(body.n))
        streams: list[Stream | None] = []
        echoed = {}
        try:
            for index, prompt in jobs:
                # choice i uses seed + i, wrapping past the largest seed so that any valid seed works
                seeded = params if params.seed is None else replace(params, seed=(params.seed + index) % (MAX_SEED + 1))
                streams.append(_submit(engine, settings, GenerationRequest(
                    prompt, max_tokens, seeded, tuple(body.stop_list), body.logprobs, incremental=body.stream))
                               if max_tokens else None)
            if body.echo:
                for prompt in set(body.prompts):
                    echoed[prompt] = await _engine_call(engine, engine.score(prompt))
        except APIError:  # the queue is full or the server stops: what was already queued must not run unread
            for stream in streams:
                if stream is not None:
                    stream.cancel()
            raise
        completion = _Completion(engine, body, jobs, echoed, request.state.access)
        if body.stream:
            return StreamingResponse(completion.events(streams), media_type="text/event-stream", headers=SSE_HEADERS)
        live = [s for s in streams if s is not None]
        results = iter(await _results_or_cancel(request, live) if live else [])
        choices, usage = [], [0, 0]
        for (index, prompt), stream in zip(jobs, streams):
            tokens, finished = next(results) if stream else ([], Finished("length", "", 0))
            _check_finish(finished)
            choices.append(completion.choice(index, prompt, tokens, finished))
            usage[0] += len(engine.tokenizer.encode(prompt, add_bos=True))
            usage[1] += finished.completion_tokens
        _note(request, prompt_tokens=usage[0], completion_tokens=usage[1])
        return p.CompletionResponse(id=completion.id, created=completion.created, model=engine.name, choices=choices,
                                    usage=p.CompletionUsage(prompt_tokens=usage[0], completion_tokens=usage[1],
                                                            total_tokens=sum(usage)))

    return router


def _generated_token(event: TokenEvent) -> p.GeneratedToken:
    return p.GeneratedToken(id=event.id, text=event.text, logprob=event.logprob,
                            top=[p.Alternative(text=t, logprob=_logprob_value(lp)) for t, lp in event.top or []] or None)


async def _generate_events(stream: Stream, with_tokens: bool, access: dict[str, Any]) -> AsyncIterator[str]:
    """SSE of /v1/generate; if the client leaves, the generator is closed and the sequence cancelled."""
    try:
        async for event in stream:
            if isinstance(event, TokenEvent):
                token = _generated_token(event).model_dump(exclude_none=True) if with_tokens else {"id": event.id}
                yield _sse({"text": event.text, "token": token})
                continue
            access["completion_tokens"] = event.completion_tokens
            if event.reason in ("timeout", "shutdown", "error"):
                yield _sse({"error": {"message": f"generation ended early: {event.reason}", "type": "server_error",
                                      "param": None, "code": event.reason}})
            else:
                yield _sse({"finish_reason": event.reason, "text": event.text, "seed": stream.seed,
                            "usage": {"prompt_tokens": stream.prompt_tokens,
                                      "completion_tokens": event.completion_tokens}})
        yield "data: [DONE]\n\n"
    finally:
        stream.cancel()


class _Completion:
    """Turns engine events into OpenAI completion choices and stream chunks."""

    def __init__(self, engine: ModelEngine, body: p.CompletionRequest, jobs: list[tuple[int, str]],
                 echoed: dict[str, Score], access: dict[str, Any]):
        self.id = f"cmpl-{uuid.uuid4().hex[:24]}"
        self.created = int(time.time())
        self.engine, self.body, self.jobs, self.echoed = engine, body, jobs, echoed
        self.access = access  # the request's access-log facts: a stream adds its usage when it ends

    def _echo(self, prompt: str) -> tuple[str, p.CompletionLogprobs | None]:
        if not self.body.echo:
            return "", None
        logprobs = p.CompletionLogprobs()
        offset = 0
        score = self.echoed[prompt]
        for piece_id, lp in zip(score.token_ids, score.logprobs.tolist()):
            text = self.engine.tokenizer.decode([piece_id])
            logprobs.tokens.append(text)
            logprobs.token_logprobs.append(lp)
            logprobs.top_logprobs.append(None)
            logprobs.text_offset.append(offset)
            offset += len(text)
        return prompt, logprobs

    def _add(self, logprobs: p.CompletionLogprobs, tokens: list[TokenEvent], offset: int) -> None:
        for event in tokens:
            text = self.engine.tokenizer.decode([event.id])
            logprobs.tokens.append(text)
            logprobs.token_logprobs.append(event.logprob)
            logprobs.top_logprobs.append({t: _logprob_value(lp) for t, lp in event.top} if event.top else
                                         ({} if self.body.logprobs == 0 else None))
            logprobs.text_offset.append(offset)
            offset += len(event.text)

    def choice(self, index: int, prompt: str, tokens: list[TokenEvent], finished: Finished) -> p.CompletionChoice:
        text, logprobs = self._echo(prompt)
        if self.body.logprobs is None:
            logprobs = None
        else:
            logprobs = logprobs or p.CompletionLogprobs()
            self._add(logprobs, tokens, len(text))
        return p.CompletionChoice(index=index, text=text + finished.text, logprobs=logprobs,
                                  finish_reason="length" if finished.reason == "length" else "stop")

    async def events(self, streams: list[Stream | None]) -> AsyncIterator[str]:
        merged: asyncio.Queue = asyncio.Queue()

        async def pump(index: int, stream: Stream | None) -> None:
            if stream is None:
                await merged.put((index, Finished("length", "", 0)))
                return
            async for event in stream:
                await merged.put((index, event))

        pumps = [asyncio.ensure_future(pump(i, s)) for (i, _), s in zip(self.jobs, streams)]
        usage = [sum(len(self.engine.tokenizer.encode(prompt, add_bos=True)) for _, prompt in self.jobs), 0]
        try:
            for index, prompt in self.jobs:
                text, logprobs = self._echo(prompt)
                if text:
                    yield self._chunk(index, text, logprobs, None)
            open_choices = len(self.jobs)
            offsets = [len(prompt) if self.body.echo else 0 for _, prompt in self.jobs]
            while open_choices:
                index, event = await merged.get()
                if isinstance(event, TokenEvent):
                    logprobs = None
                    if self.body.logprobs is not None:
                        logprobs = p.CompletionLogprobs()
                        self._add(logprobs, [event], offsets[index])
                    offsets[index] += len(event.text)
                    yield self._chunk(index, event.text, logprobs, None)
                    continue
                open_choices -= 1
                usage[1] += event.completion_tokens
                if event.reason in ("timeout", "shutdown", "error"):
                    yield _sse({"error": {"message": f"generation ended early: {event.reason}",
                                          "type": "server_error", "param": None, "code": event.reason}})
                    continue
                yield self._chunk(index, "", None, "length" if event.reason == "length" else "stop")
            if self.body.stream_options and self.body.stream_options.include_usage:
                yield _sse(p.CompletionResponse(id=self.id, created=self.created, model=self.engine.name, choices=[],
                                                usage=p.CompletionUsage(prompt_tokens=usage[0],
                                                                        completion_tokens=usage[1],
                                                                        total_tokens=sum(usage))).model_dump())
            yield "data: [DONE]\n\n"
        finally:
            self.access.update(prompt_tokens=usage[0], completion_tokens=usage[1])
            for task in pumps:
                task.cancel()
            for stream in streams:
                if stream is not None:
                    stream.cancel()

    def _chunk(self, index: int, text: str, logprobs: p.CompletionLogprobs | None, finish: str | None) -> str:
        choice = p.CompletionChoice(index=index, text=text, logprobs=logprobs, finish_reason=finish)
        chunk = p.CompletionResponse(id=self.id, created=self.created, model=self.engine.name, choices=[choice])
        return _sse(chunk.model_dump(exclude={"usage"}))
