"""The FastAPI application: HTTP in front of one `ModelEngine` per loaded checkpoint (API.md)."""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import math
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
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from model import SamplingParams, load_checkpoint
from model.scoring import Score

from . import protocol as p
from .engine import Finished, GenerationRequest, ModelEngine, QueueFull, ShuttingDown, Stream, TokenEvent
from .metrics import Metrics
from .settings import Settings

log = logging.getLogger("lyricist.server")
STATIC = Path(__file__).parent / "static"
RETRY_AFTER_S = 1
ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
               413: "invalid_request_error", 429: "rate_limit_error", 503: "service_unavailable", 504: "timeout"}


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


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_engines(request: Request) -> Engines:
    return request.app.state.engines


def require_api_key(request: Request, settings: Annotated[Settings, Depends(get_settings)]) -> None:
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
        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type"])
    _add_error_handlers(app)
    _add_http_middleware(app)
    app.include_router(_open_routes())
    app.include_router(_api_routes(), prefix="/v1", dependencies=[Depends(require_api_key)])
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
        message = f"no such path: {request.url.path}" if error.status_code == 404 else str(error.detail)
        return error_response(error.status_code, message, headers=getattr(error, "headers", None))

    @app.exception_handler(Exception)
    async def crash(request: Request, error: Exception) -> JSONResponse:
        log.exception("unexpected error on %s", request.url.path)
        return error_response(500, "internal error; the server log has the details")


def _add_http_middleware(app: FastAPI) -> None:
    settings: Settings = app.state.settings
    metrics: Metrics = app.state.metrics

    @app.middleware("http")
    async def limits_and_metrics(request: Request, call_next) -> Response:
        started = time.perf_counter()
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > settings.max_body_bytes:
            metrics.rejected.labels("too_large").inc()
            response = error_response(413, f"request body is {length} bytes, the most accepted is "
                                           f"{settings.max_body_bytes}", code="too_large")
        else:
            response = await call_next(request)
        route = request.scope.get("route")
        endpoint = request.url.path if route is not None else "unknown"  # unknown paths would be unbounded labels
        metrics.requests.labels(endpoint, str(response.status_code)).inc()
        metrics.request_duration.labels(endpoint).observe(time.perf_counter() - started)
        return response


def _check_prompt(settings: Settings, metrics: Metrics, text: str, field: str) -> None:
    if len(text) > settings.max_prompt_chars:
        metrics.rejected.labels("too_large").inc()
        raise APIError(413, f"{field} has {len(text)} characters, the most accepted is {settings.max_prompt_chars}",
                       field, "too_large")


def _check_max_tokens(settings: Settings, value: int, field: str) -> None:
    if value > settings.max_new_tokens:
        raise APIError(400, f"{field} must be at most {settings.max_new_tokens}, got {value}", field, "invalid_value")


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

    @router.get("/healthz")
    async def healthz() -> dict:
        return {"status": "ok"}

    @router.get("/readyz")
    async def readyz(engines: EnginesDep) -> JSONResponse:
        if not engines.ready:
            return error_response(503, "not ready: the models are not loaded, or the server is shutting down",
                                  code="not_ready")
        return JSONResponse({"status": "ready", "models": list(engines.by_name)})

    @router.get("/metrics")
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

    @router.post("/predict", response_model=p.PredictResponse)
    async def predict(body: p.PredictRequest, settings: SettingsDep, engines: EnginesDep, request: Request):
        engine = engines.get(body.model)
        _check_prompt(settings, request.app.state.metrics, body.prompt, "prompt")
        result = await _engine_call(engine, engine.predict(body.prompt, body.top_k, body.unit, body.temperature))
        return p.PredictResponse(
            model=engine.name, unit=result.unit, prompt_tokens=result.prompt_tokens, coverage=result.coverage,
            entropy=result.entropy, exact=result.exact,
            distribution=[p.Candidate(text=t, prob=pr, logprob=math.log(pr)) for t, pr in result.distribution])

    @router.post("/generate", response_model=p.GenerateResponse, response_model_exclude_none=True)
    async def generate(body: p.GenerateRequest, settings: SettingsDep, engines: EnginesDep, request: Request):
        engine = engines.get(body.model)
        _check_prompt(settings, request.app.state.metrics, body.prompt, "prompt")
        _check_max_tokens(settings, body.max_new_tokens, "max_new_tokens")
        stream = _submit(engine, settings, GenerationRequest(
            body.prompt, body.max_new_tokens, _sampling(body), tuple(body.stop), body.logprobs or None,
            incremental=body.stream))
        if body.stream:
            return StreamingResponse(_generate_events(stream, body.logprobs > 0), media_type="text/event-stream",
                                     headers=SSE_HEADERS)
        ((tokens, finished),) = await _results_or_cancel(request, [stream])
        _check_finish(finished)
        return p.GenerateResponse(
            id=stream.id, model=engine.name, text=finished.text, seed=stream.seed, finish_reason=finished.reason,
            usage=p.GenerateUsage(prompt_tokens=stream.prompt_tokens, completion_tokens=finished.completion_tokens),
            tokens=[_generated_token(t) for t in tokens] if body.logprobs else None)

    @router.post("/score", response_model=p.ScoreResponse)
    async def score(body: p.ScoreRequest, settings: SettingsDep, engines: EnginesDep, request: Request):
        engine = engines.get(body.model)
        _check_prompt(settings, request.app.state.metrics, body.text, "text")
        score = await _engine_call(engine, engine.score(body.text))
        figures = score.metrics()
        return p.ScoreResponse(
            model=engine.name, tokens=figures["tokens"], chars=figures["chars"], nll=figures["nll"],
            nats_per_char=figures["nats_per_char"] if body.text else None,
            perplexity=figures["perplexity"] if score.token_ids else None,
            token_logprobs=[p.TokenLogprob(text=engine.tokenizer.decode([i]), logprob=lp)
                            for i, lp in zip(score.token_ids, score.logprobs.tolist())])

    @router.post("/completions", response_model=p.CompletionResponse, response_model_exclude_none=True)
    async def completions(body: p.CompletionRequest, settings: SettingsDep, engines: EnginesDep, request: Request):
        engine = engines.get(body.model)
        for name in ("presence_penalty", "frequency_penalty"):
            if getattr(body, name):
                raise APIError(400, f"{name} is not supported (use repetition_penalty); it must be 0", name,
                               "unsupported")
        if len(body.stop_list) > p.MAX_STOP_STRINGS:
            raise APIError(400, f"stop takes at most {p.MAX_STOP_STRINGS} strings", "stop", "invalid_value")
        max_tokens = 16 if body.max_tokens is None else body.max_tokens
        _check_max_tokens(settings, max_tokens, "max_tokens")
        for prompt in body.prompts:
            _check_prompt(settings, request.app.state.metrics, prompt, "prompt")
        params = _sampling(body)
        jobs = []  # (choice index, prompt) in OpenAI's order: prompt-major, then n
        for prompt in body.prompts:
            jobs.extend((len(jobs), prompt) for _ in range(body.n))
        streams: list[Stream | None] = []
        try:
            for index, prompt in jobs:
                seeded = params if params.seed is None else replace(params, seed=params.seed + index)
                streams.append(_submit(engine, settings, GenerationRequest(
                    prompt, max_tokens, seeded, tuple(body.stop_list), body.logprobs, incremental=body.stream))
                               if max_tokens else None)
        except APIError:
            for stream in streams:
                if stream is not None:
                    stream.cancel()
            raise
        echoed = {}
        if body.echo:
            for prompt in set(body.prompts):
                echoed[prompt] = await _engine_call(engine, engine.score(prompt))
        completion = _Completion(engine, body, jobs, echoed)
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
        return p.CompletionResponse(id=completion.id, created=completion.created, model=engine.name, choices=choices,
                                    usage=p.CompletionUsage(prompt_tokens=usage[0], completion_tokens=usage[1],
                                                            total_tokens=sum(usage)))

    return router


def _generated_token(event: TokenEvent) -> p.GeneratedToken:
    return p.GeneratedToken(id=event.id, text=event.text, logprob=event.logprob,
                            top=[p.Alternative(text=t, logprob=_logprob_value(lp)) for t, lp in event.top or []] or None)


async def _generate_events(stream: Stream, with_tokens: bool) -> AsyncIterator[str]:
    """SSE of /v1/generate; if the client leaves, the generator is closed and the sequence cancelled."""
    try:
        async for event in stream:
            if isinstance(event, TokenEvent):
                token = _generated_token(event).model_dump(exclude_none=True) if with_tokens else {"id": event.id}
                yield _sse({"text": event.text, "token": token})
            elif event.reason in ("timeout", "shutdown", "error"):
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
                 echoed: dict[str, Score]):
        self.id = f"cmpl-{uuid.uuid4().hex[:24]}"
        self.created = int(time.time())
        self.engine, self.body, self.jobs, self.echoed = engine, body, jobs, echoed

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
            for task in pumps:
                task.cancel()
            for stream in streams:
                if stream is not None:
                    stream.cancel()

    def _chunk(self, index: int, text: str, logprobs: p.CompletionLogprobs | None, finish: str | None) -> str:
        choice = p.CompletionChoice(index=index, text=text, logprobs=logprobs, finish_reason=finish)
        chunk = p.CompletionResponse(id=self.id, created=self.created, model=self.engine.name, choices=[choice])
        return _sse(chunk.model_dump(exclude={"usage"}))
