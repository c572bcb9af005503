"""ASGI middleware that bounds request bodies as they arrive, before anything buffers them: each
body by `max_bytes` (413), and all bodies in progress together by `max_buffered_bytes` (503 with
Retry-After), so that a burst of large uploads cannot take the process past its memory.

Only bytes that have arrived count, for as long as their request is being served: a client that
trickles its body holds next to nothing, and a refused request holds nothing. Without the shared
bound, 50 uploads of 10 MiB at once took one worker from 260 MiB to 1.6 GiB resident (the bodies,
their joined copies, and their decoding), past the Kubernetes manifest's limit of 1.5 GiB.
"""

from __future__ import annotations

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.engine.errors import Overloaded
from service.http.errors import ApiError, engine_refusal, error_envelope


class BodyLimits:
    def __init__(self, app: ASGIApp, max_bytes: int, max_buffered_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_buffered_bytes = max_buffered_bytes
        self.buffered = 0  # body bytes of the requests being served, all of them together

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await _refuse(scope, send, self._too_large())
            return
        held = 0  # this request's share of self.buffered

        async def limited_receive() -> Message:
            nonlocal held
            message = await receive()
            size = len(message.get("body", b"")) if message["type"] == "http.request" else 0
            if held + size > self.max_bytes:
                raise _Refused(self._too_large())
            if self.buffered + size > self.max_buffered_bytes:
                raise _Refused(self._busy())
            held += size
            self.buffered += size
            return message

        try:
            await self.app(scope, limited_receive, send)
        except _Refused as refused:
            await _refuse(scope, send, refused.error)
        finally:
            self.buffered -= held

    def _too_large(self) -> ApiError:
        return ApiError(413, f"request body over {self.max_bytes} bytes")

    def _busy(self) -> ApiError:
        bound = self.max_buffered_bytes
        message = f"the server holds its bound of {bound} bytes of request bodies; retry shortly"
        return engine_refusal(Overloaded(message))  # 503 with Retry-After, as a full engine answers


class _Refused(Exception):
    def __init__(self, error: ApiError) -> None:
        self.error = error


async def _refuse(scope: Scope, send: Send, error: ApiError) -> None:
    if scope["path"] == "/v2" or scope["path"].startswith("/v2/"):
        body = orjson.dumps({"error": error.message})  # the Open Inference Protocol's error object
    else:
        body = orjson.dumps(error_envelope(error.code, error.message))
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *((name.lower().encode(), value.encode()) for name, value in (error.headers or {}).items()),
    ]
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
