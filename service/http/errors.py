"""The one error envelope, `{"error": {"code", "message", "request_id"}}`, and the one mapping
from refusals (the HTTP layer's ApiError, the engine's errors) to statuses and Retry-After."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.engine.errors import EngineError, NotReady, RepositoryUnavailable, UnknownModel
from service.http.request_context import HEADER, current_request_id

log = logging.getLogger(__name__)

_CODES = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_value",
    503: "unavailable",
}


class ApiError(Exception):
    """A refusal with an honest status; the message says what was wrong and what to send."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = _CODES.get(status, "error")
        self.message = message
        self.headers = headers


def engine_refusal(error: EngineError) -> ApiError:
    """The engine's error as the HTTP answer: the only place its statuses are chosen."""
    if isinstance(error, UnknownModel):
        return ApiError(404, error.message)
    retry_after_s = 5 if isinstance(error, NotReady | RepositoryUnavailable) else 1  # a while, not a moment
    return ApiError(503, error.message, headers={"Retry-After": str(retry_after_s)})


def error_envelope(code: str, message: str) -> dict[str, dict[str, str]]:
    """The envelope, naming the request it answers (its X-Request-ID) when there is one."""
    error = {"code": code, "message": message}
    request_id = current_request_id()
    if request_id is not None:
        error["request_id"] = request_id
    return {"error": error}


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    envelope = error_envelope(code, message)
    if "request_id" in envelope["error"]:  # the last-resort 500 is sent outside RequestContext
        headers = {**(headers or {}), HEADER: envelope["error"]["request_id"]}
    return JSONResponse(envelope, status_code=status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message, exc.headers)

    @app.exception_handler(EngineError)
    async def _engine_error(_: Request, exc: EngineError) -> JSONResponse:
        refusal = engine_refusal(exc)
        return error_response(refusal.status, refusal.code, refusal.message, refusal.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _CODES.get(exc.status_code, "error")
        return error_response(exc.status_code, code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        return error_response(422, "invalid_value", problems[:300] or "invalid request")

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, "internal", "internal error; the server logged the details")


class CatchAll:
    """ASGI middleware of last resort, inside RequestContext (so the 500 carries the request's id)
    and outside the body-size limit (whose refusal travels as an exception): any exception a route
    lets through becomes a 500 envelope naming the request id, and one log line. The traceback is
    logged at DEBUG only: a bug that every request hits must not write a traceback per request.
    Without it Starlette's own handler answers, then re-raises, and uvicorn logs the traceback."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as error:
            request_id = current_request_id() or "-"
            log.error(
                "500 for %s %s (request %s): %s: %s",
                scope["method"],
                scope["path"][:100],
                request_id,
                type(error).__name__,
                str(error)[:200],
            )
            log.debug("traceback of request %s", request_id, exc_info=error)
            if started:  # half an answer is out: uvicorn closes the connection, nothing more to send
                return
            message = f"internal error (request {request_id}); the server logged the details"
            await error_response(500, "internal", message)(scope, receive, send)


def quote(value: Any) -> str:
    """At most ~100 characters of a client's value, for an error message."""
    text = repr(value)
    return text if len(text) <= 100 else f"{text[:100]}... ({len(text)} characters)"
