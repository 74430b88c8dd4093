"""The one error type of the API, its JSON body and its SSE event, and what every other failure becomes.

Everything that can refuse a request ends here: a bad value, a full queue, an unknown model, a
generation the engine ended early. `APIError` is a Starlette `HTTPException`, so one raised while
FastAPI reads the body (the body limit) reaches the handler as it is instead of becoming a 400.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from . import protocol as p
from .engine import FinishReason, QueueFull, ShuttingDown
from .registry import ModelNotReady, UnknownModel

RETRY_AFTER_S = 1
CLOSE = {"Connection": "close"}  # after a 413: the rest of that body is not worth reading
ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
               413: "invalid_request_error", 422: "invalid_request_error", 429: "rate_limit_error",
               503: "service_unavailable", 504: "timeout"}
ERROR_MEANINGS = {
    400: "a malformed or out-of-range value; the message names the field and the allowed range",
    401: "an API key is required and was missing or wrong",
    404: "unknown model",
    413: "the body or the prompt is longer than the configured limit",
    422: "a well-formed request that cannot be carried out: songwriting constraints nothing can meet (or none "
         "found within the work budget), or `adapt` on a model without gradient statistics; `param` says which",
    429: "the waiting queue is full; try again after Retry-After seconds",
    503: "not ready (no model loaded yet), or shutting down",
    504: "the request was still unfinished after LYRICIST_REQUEST_TIMEOUT_S",
}


class APIError(StarletteHTTPException):
    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(status, message, headers)
        self.status, self.message, self.param, self.code = status, message, param, code

    def body(self) -> dict[str, Any]:
        error = p.ErrorBody(message=self.message, type=ERROR_TYPES.get(self.status, "server_error"),
                            param=self.param, code=self.code)
        return p.ErrorResponse(error=error).model_dump()

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)

    def sse(self) -> str:
        """The same error as an event of a stream that had already begun (its status was 200)."""
        return p.sse_event(self.body())


def declared_errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI `responses` of these statuses: each is the one error envelope."""
    responses: dict[int | str, dict[str, Any]] = {
        status: {"model": p.ErrorResponse, "description": ERROR_MEANINGS[status]} for status in statuses}
    if 429 in responses:
        responses[429]["headers"] = {"Retry-After": {"description": "seconds", "schema": {"type": "integer"}}}
    return responses


def finish_error(reason: FinishReason) -> APIError | None:
    """The error a generation that ended this way answers with; None for a normal end."""
    if reason is FinishReason.TIMEOUT:
        return APIError(504, "the request took longer than LYRICIST_REQUEST_TIMEOUT_S", code="timeout")
    if reason is FinishReason.SHUTDOWN:
        return APIError(503, "the server shut down before the request finished", code="shutting_down")
    if reason is FinishReason.ERROR:
        return APIError(500, "the model step failed; the server log has the details", code="engine_error")
    if reason is FinishReason.CANCELLED:  # only its own client cancels a request, and it has left
        return APIError(499, "client disconnected")
    return None


def refusal(error: Exception) -> APIError:
    """The answer to the engine or the registry refusing work: they know nothing of HTTP."""
    if isinstance(error, QueueFull):
        return APIError(429, str(error), code="queue_full", headers={"Retry-After": str(RETRY_AFTER_S)})
    if isinstance(error, ShuttingDown):
        return APIError(503, str(error), code="shutting_down")
    if isinstance(error, ModelNotReady):
        return APIError(503, str(error), code="not_ready")
    if isinstance(error, UnknownModel):
        return APIError(404, str(error), "model", "model_not_found")
    raise TypeError(f"not a refusal: {error!r}")


def install_error_handlers(app: FastAPI) -> None:
    async def refused(request: Request, error: Exception) -> JSONResponse:
        return refusal(error).response()

    for kind in (QueueFull, ShuttingDown, ModelNotReady, UnknownModel):
        app.add_exception_handler(kind, refused)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        if isinstance(error, APIError):
            return error.response()
        message = f"no such path: {request.url.path}" if error.status_code == 404 else str(error.detail)
        if error.status_code == 400 and error.__cause__ is not None:  # FastAPI could not decode the JSON body
            message = f"the request body is not JSON in UTF-8: {error.__cause__}"[:300]
        return APIError(error.status_code, message, headers=error.headers).response()

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        request.app.state.metrics.rejected.labels("validation").inc()
        content_type = request.headers.get("content-type", "")
        if request.method == "POST" and "json" not in content_type:
            # curl -d sends a form; say what the body must be rather than how it failed to parse.
            return APIError(400, f"the request body must be JSON sent with Content-Type: application/json, "
                                 f"got {content_type or 'no content type'}", None, "invalid_content_type").response()
        problems, param, code = [], None, "invalid_value"
        for e in error.errors():
            if e["type"] == "unknown_field":  # its message names the field and the nearest known one
                param, code = param or e["ctx"]["field"], "unknown_field"
                problems.append(e["msg"][:300])
                continue
            field = ".".join(str(part) for part in e["loc"] if part != "body")
            param = param or field or None
            got = f", got {e['input']!r}" if "input" in e and e["type"] != "missing" else ""
            problems.append(f"{field or 'body'}: {e['msg']}{got}"[:300])
        return APIError(400, "; ".join(problems), param, code).response()
