"""Admission at the front door: at most `queue_max` inference requests in flight; past that,
inference POSTs get 503 with Retry-After before their body is routed, parsed or queued.

A request counts from the moment it is admitted until its ASGI call returns, so the bound holds
however many requests one event-loop iteration parses (under a flood, hundreds at once) and
wherever the admitted ones are: parsed and waiting for their task, queued, computed, or answered
and being written. Under overload refusals are most of the traffic, and every microsecond the
event loop spends on one is taken from the requests it admitted. Two doors, one count:

- `RefusingHttpToolsProtocol`, for `python -m service`: uvicorn's httptools protocol, admitting or
  refusing in the parser's callbacks, before an ASGI task or scope exists; a refusal is one canned
  write. Measured here with wrk at 512 connections and everything refused: 36,000 refusals/s
  against 9,500/s through the ASGI guard (about 27 against 105 µs of event loop each).
- `ShedWhenFull`, the ASGI guard: it ends the count of every admitted request, and admits or
  refuses itself those no protocol admitted (any other ASGI server, the in-process test client).
"""

from __future__ import annotations

import time
from typing import Any

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

BODY = b'{"error":{"code":"unavailable","message":"server is at capacity; retry shortly"}}'
HEADERS = (
    (b"content-type", b"application/json"),
    (b"content-length", str(len(BODY)).encode()),
    (b"retry-after", b"1"),
)
_INFERENCE_PATHS = ("/predict", "/uncertainty")
_ADMITTED = "dropserve.admitted"  # scope key: the protocol admitted (and counted) this request
_ARRIVED = "dropserve.arrived_at"  # scope key: time.monotonic() when an inference POST was admitted


def arrival(scope: Any) -> float | None:
    """When this inference request was admitted (its headers parsed), for its wait to count from
    there: under a flood the event loop takes a while to read, route and queue it."""
    return scope.get(_ARRIVED)


def is_inference(method: str, path: str) -> bool:
    """POST to a predict or uncertainty route (all of them end so, with or without a model)."""
    return method == "POST" and path.endswith(_INFERENCE_PATHS)


class Admission:
    """Inference requests admitted and not yet answered, at most `limit`. Event-loop thread only."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_flight = 0

    def admit(self) -> bool:
        """Count one more request, unless `limit` are in flight already."""
        if self.in_flight >= self.limit:
            return False
        self.in_flight += 1
        return True

    def leave(self) -> None:
        self.in_flight -= 1


class ShedWhenFull:
    """ASGI guard: the refusal minus FastAPI's routing, dependencies and body parsing."""

    def __init__(self, app: Any, admission: Admission) -> None:
        self.app = app
        self.admission = admission

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        admitted = scope.get(_ADMITTED, False)
        if not admitted and scope["type"] == "http" and is_inference(scope["method"], scope["path"]):
            admitted = self.admission.admit()
            scope[_ARRIVED] = time.monotonic()
            if not admitted:
                await send({"type": "http.response.start", "status": 503, "headers": list(HEADERS)})
                await send({"type": "http.response.body", "body": BODY})
                return
        if not admitted:
            await self.app(scope, receive, send)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            self.admission.leave()


class RefusingHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol that admits inference POSTs in the parser, or answers 503.

    A refused request's body is read and dropped, and the connection stays open, unless the client
    asked to close it or waits for `100 Continue` before sending its body: that client is answered
    at once and the connection closed. Requests behind one still in flight on the same connection
    (HTTP pipelining) are left to the ASGI guard, so answers keep their order. Bind the count with
    `admitting`.
    """

    admission: Admission
    _refusing = False

    @classmethod
    def admitting(cls, admission: Admission) -> type[RefusingHttpToolsProtocol]:
        """This protocol counting against `admission`, as a class for uvicorn's `http=` option."""
        return type(cls.__name__, (cls,), {"admission": admission})

    def on_headers_complete(self) -> None:
        idle = self.cycle is None or self.cycle.response_complete  # so its task starts now
        method = self.parser.get_method().decode("latin-1")
        if not (idle and is_inference(method, self.url.partition(b"?")[0].decode("latin-1"))):
            super().on_headers_complete()
        elif self.admission.admit():
            super().on_headers_complete()
            self.scope[_ADMITTED] = True  # type: ignore[literal-required]
            self.scope[_ARRIVED] = time.monotonic()  # type: ignore[literal-required]
        else:
            self._refusing = True  # on_body drops the body; on_message_complete answers
            if self.expect_100_continue:  # its body will not come until we say so
                self._refuse(keep_alive=False)

    def on_body(self, body: bytes) -> None:
        if not self._refusing:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if not self._refusing:
            super().on_message_complete()
            return
        self._refusing = False
        if not self.transport.is_closing():
            self._refuse(keep_alive=self.parser.should_keep_alive())

    def _refuse(self, keep_alive: bool) -> None:
        head = [STATUS_LINE[503]]
        for name, value in (*self.server_state.default_headers, *HEADERS):  # date, server, ...
            head += [name, b": ", value, b"\r\n"]
        if not keep_alive:
            head.append(b"connection: close\r\n")
        self.transport.write(b"".join([*head, b"\r\n", BODY]))
        if keep_alive:
            self.on_response_complete()  # counts it, arms the keep-alive timeout
        else:
            self.transport.close()
