"""ASGI middleware that bounds the bodies a process holds, request and response alike: each
request body by `max_bytes` (413, before anything buffers it), and every body in progress
together by a BodyBudget (DROPSERVE_MAX_BUFFERED_BYTES; 503 with Retry-After), so that a burst of
large uploads, or of large answers that clients are slow to read, cannot take the process past its
memory.

A request body counts with the bytes that have arrived (a client that trickles its body holds next
to nothing), an answer with its Content-Length; both until the request ends. A route that will build
a large answer reserves room for it before computing it (`BodyBudget.holding`). Large answers go to
the server in slices, so that uvicorn's flow control holds the request open while its client reads
(sent whole, an answer sits in the transport's buffer after its request has ended, out of any
count), and a client that stops reading is given up on after `body_timeout_s`. Bodies up to
SMALL_BYTES are never refused for the shared bound (they count toward it): whoever fills it can hold
up large uploads and answers, never ordinary requests.

Without it, 50 uploads of 10 MiB at once took one worker from 260 MiB to 1.6 GiB resident, and 20
clients that did not read answers of 2 million sampled probabilities (44 MB each) to 1.6 GiB: past
the Kubernetes manifest's limit of 1.5 GiB, where an OOM kill loses every request in flight.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from contextlib import contextmanager

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.engine.errors import Overloaded
from service.http.errors import ApiError, engine_refusal, error_envelope

log = logging.getLogger(__name__)

SMALL_BYTES = 64 * 1024
SLICE_BYTES = 256 * 1024  # an answer larger than this goes to the server in slices of this size


class BodyBudget:
    """The bytes of bodies one process holds, against its bound: shared by BodyLimits and the
    routes that reserve room for a large answer before they compute it."""

    def __init__(self, bound: int) -> None:
        self.bound = bound
        self.held = 0

    def take(self, size: int, total: int) -> None:
        """Count `size` more bytes of a body of `total` so far; Overloaded (503 with Retry-After)
        when a body over SMALL_BYTES would take the process past its bound."""
        if total > SMALL_BYTES and self.held + size > self.bound:
            raise Overloaded(
                f"the server holds its bound of {self.bound} bytes of request and response bodies; "
                "retry shortly"
            )
        self.held += size

    def give_back(self, size: int) -> None:
        self.held -= size

    @contextmanager
    def holding(self, size: int) -> Iterator[None]:
        """`size` bytes taken for the block, given back after it."""
        self.take(size, size)
        try:
            yield
        finally:
            self.give_back(size)


class BodyLimits:
    def __init__(self, app: ASGIApp, max_bytes: int, budget: BodyBudget, send_timeout_s: float) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.budget = budget
        self.send_timeout_s = send_timeout_s  # longest a client may leave a slice of an answer unread

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await _refuse(scope, send, self._too_large())
            return
        received = 0  # of the request body
        held = 0  # this request's bytes in the budget
        dropping = False  # the app's answer was replaced by a 503, or its client stopped reading

        def hold(size: int, total: int) -> None:
            nonlocal held
            try:
                self.budget.take(size, total)
            except Overloaded as busy:
                raise _Refused(engine_refusal(busy)) from None  # 503 with Retry-After, as a full engine
            held += size

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                size = len(message.get("body", b""))
                received += size
                if received > self.max_bytes:
                    raise _Refused(self._too_large())
                hold(size, received)
            return message

        async def limited_send(message: Message) -> None:
            nonlocal dropping
            if message["type"] == "http.response.start":
                length = _content_length(message)
                try:
                    hold(length, length)
                except _Refused as refused:
                    dropping = True
                    await _refuse(scope, send, refused.error)
                    return
            if dropping:
                return
            if message["type"] == "http.response.body" and len(message.get("body", b"")) > SLICE_BYTES:
                dropping = not await _send_in_slices(send, message, self.send_timeout_s)
            else:
                await send(message)

        try:
            await self.app(scope, limited_receive, limited_send)
        except _Refused as refused:
            await _refuse(scope, send, refused.error)
        finally:
            self.budget.give_back(held)

    def _too_large(self) -> ApiError:
        return ApiError(413, f"request body over {self.max_bytes} bytes")


class _Refused(Exception):
    def __init__(self, error: ApiError) -> None:
        self.error = error


def _content_length(message: Message) -> int:
    for name, value in message.get("headers", ()):
        if name.lower() == b"content-length" and value.isdigit():
            return int(value)
    return 0


async def _send_in_slices(send: Send, message: Message, timeout_s: float) -> bool:
    """One body message as several: uvicorn waits for its client to read before each send. A client
    that leaves a slice unread for `timeout_s` is given up on: the answer is left unfinished, so
    uvicorn closes the connection (logging that the response was not completed), and the request's
    bytes go back to the budget. False when it was given up on."""
    body: bytes = message["body"]
    for start in range(0, len(body), SLICE_BYTES):
        end = start + SLICE_BYTES
        more = end < len(body) or message.get("more_body", False)
        try:
            async with asyncio.timeout(timeout_s):
                await send({"type": "http.response.body", "body": body[start:end], "more_body": more})
        except TimeoutError:
            log.warning("a client read none of its answer for %g s; closing its connection", timeout_s)
            return False
    return True


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
