"""Each request's id and record: `X-Request-ID`, request metrics, and one access-log line.

An `X-Request-ID` from the client is kept when it is 1 to 128 visible ASCII characters (no spaces
or control characters, so it is safe in headers and logs); otherwise, or when there is none, the
server makes one (32 hex digits). Every response carries it, and every error envelope names it
(service/http/errors reads it from here). A plain ASGI middleware: no second task or body stream
per request, as Starlette's BaseHTTPMiddleware would add.

The engine's observer notes each inference job on the record of the request that awaited it
(the observer runs in that request's task, where the context variable holds its record), so the
access log and metrics know the model, version, samples and micro-batch of every answer. Like the
request's own metrics, the job's (engine timings, the answers' uncertainty) are recorded once the
answer is sent: a client does not wait for the server's bookkeeping.
"""

from __future__ import annotations

import asyncio
import re
import sys
import time
import uuid
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from models.artifact import LoadedModel
from service.draining import Drain
from service.engine.engine import JobReport
from service.http.metrics import Metrics
from service.logs import local_time, utc_time

HEADER = "x-request-id"
_VALID_ID = re.compile(rb"[\x21-\x7e]{1,128}")
LOGGER = "service.access"  # the logger name its lines carry
UNROUTED = "(unrouted)"  # the route label of requests that matched no route or were refused before


@dataclass
class RequestRecord:
    """What one request was and how it went; the access-log line is made of it."""

    request_id: str
    method: str
    path: str
    started: float  # time.perf_counter()
    status: int = 0
    model: str = ""  # the model that answered, or the one the path names when it was refused
    job: JobReport | None = None  # the inference job it awaited: version, samples, round, timings

    def note(self, report: JobReport) -> None:
        """An inference job this request awaited."""
        self.job = report
        self.model = report.loaded.manifest.name


_current: ContextVar[RequestRecord | None] = ContextVar("dropserve_request", default=None)


def current_request_id() -> str | None:
    """The id of the request being served in this task, if any."""
    record = _current.get()
    return None if record is None else record.request_id


def note_model(name: str) -> None:
    """The model this request is answered with, once its route has resolved it: a refusal after
    that (a bad body, a full engine, a client that left) is counted and logged under it too."""
    record = _current.get()
    if record is not None:
        record.model = name


def request_id_from(headers: list[tuple[bytes, bytes]]) -> str:
    """The client's X-Request-ID when it is valid, else a new one."""
    for name, value in headers:
        if name.lower() == b"x-request-id":
            if _VALID_ID.fullmatch(value):
                return value.decode("ascii")
            break
    return uuid.uuid4().hex


class RequestObserver:
    """The engine's observer: feeds the metrics and notes each job on its request's record."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def round_done(self, jobs: int) -> None:
        self.metrics.round_done(jobs)

    def job_done(self, report: JobReport) -> None:
        record = _current.get()
        if record is None:
            self.metrics.job_done(report)
        else:  # counted with the request's own metrics, once its answer is sent
            record.note(report)

    def models_changed(self, loaded: list[LoadedModel]) -> None:
        self.metrics.models_changed(loaded)


class RequestContext:
    """ASGI middleware: the request id, the in-flight gauge, request metrics, the access log."""

    def __init__(
        self,
        app: ASGIApp,
        metrics: Metrics,
        access_log: AccessLog | None = None,
        drain: Drain | None = None,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.drain = drain or Drain([])  # hears when requests start; once stopping, answers say close
        self.access_log = access_log  # None: no access lines

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # The path as sent, still percent-encoded: a decoded %0A must not start a forged log line.
        path = scope.get("raw_path", b"").decode("latin-1") or scope["path"]
        record = RequestRecord(request_id_from(scope["headers"]), scope["method"], path, time.perf_counter())
        self.drain.last_request = record.started
        # Not reset when the request ends: the task ends with it, and the error handler of last
        # resort (outside this middleware) still needs the id for its 500 envelope.
        _current.set(record)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                record.status = message["status"]
                headers = MutableHeaders(scope=message)
                headers[HEADER] = record.request_id
                if self.drain.stopping.is_set():  # service/draining.py
                    headers["connection"] = "close"
            await send(message)

        self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, send_with_id)
        except BaseException as error:
            if not record.status:  # 499: the client went away first (nginx's convention)
                record.status = 499 if isinstance(error, asyncio.CancelledError) else 500
            raise
        finally:
            self.metrics.in_flight.dec()
            self._done(scope, record)

    def _done(self, scope: Scope, record: RequestRecord) -> None:
        seconds = time.perf_counter() - record.started
        route = getattr(scope.get("route"), "path", None) or UNROUTED
        if not record.model:  # refused before its route resolved a model: the one the path names, if served
            params: dict[str, Any] = scope.get("path_params") or {}
            named = params.get("name") or params.get("model_name")
            if named in self.metrics.model_names:  # never a client's string as a label value
                record.model = named
        self.metrics.request_done(route, record.method, record.model, record.status, seconds)
        if record.job is not None:
            self.metrics.job_done(record.job)
        if self.access_log is not None:
            self.access_log.write(record, route, seconds)


class AccessLog:
    """One line per request on stderr, in the shape of every other log record (service/logs.py):
    text `<time> INFO service.access: METHOD path status latency key=value ...`, or a JSON object
    with the same fields as keys.

    Written directly, not through `logging`: a record through the logging module (a LogRecord, a
    search of the stack for its caller, handler, formatter, lock) cost every request more than the
    rest of its bookkeeping together (docs/performance.md)."""

    def __init__(self, log_format: str) -> None:
        self.json = log_format == "json"

    def write(self, record: RequestRecord, route: str, seconds: float) -> None:
        now = time.time()
        latency_ms = round(seconds * 1000, 3)
        message = f"{record.method} {record.path} {record.status} {latency_ms:.1f} ms"
        fields = _fields(record, route)
        if self.json:
            head = {"time": utc_time(now), "level": "info", "logger": LOGGER, "message": message}
            where = {"method": record.method, "path": record.path, "status": record.status}
            line = orjson.dumps({**head, **where, "latency_ms": latency_ms, **fields}).decode()
        else:  # the method, path, status and latency are the message
            pairs = " ".join([f"{key}={value}" for key, value in fields.items()])
            line = f"{local_time(now)} INFO {LOGGER}: {message} {pairs}"
        sys.stderr.write(line + "\n")


def _fields(record: RequestRecord, route: str) -> dict[str, Any]:
    """The access line's fields beside its message; those of the job when there was one."""
    fields: dict[str, Any] = {"request_id": record.request_id, "route": route}
    if record.model:
        fields["model"] = record.model
    job = record.job
    if job is not None:
        fields["version"] = job.loaded.manifest.version
        fields["instances"] = job.instances
        fields["samples"] = job.samples or None
        fields["round_size"] = job.timings.round_size
        fields["queue_wait_ms"] = round(job.timings.queue_wait_s * 1000, 3)
        fields["compute_ms"] = round(job.timings.compute_s * 1000, 3)
    return fields
