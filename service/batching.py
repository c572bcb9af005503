"""Micro-batching: concurrent requests share one forward pass, each gets its own answer back.

Requests wait in one bounded queue. A single worker task takes whatever has queued up (while the
previous batch ran, requests kept arriving: continuous batching), groups it by model and kind, and
runs each group as one forward pass in one dedicated inference thread. It waits up to
`max_wait_s` for more only while traffic is concurrent (the previous batch held more than one
request): a lone client never waits for company that is not coming.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from models.artifact import LoadedModel
from service.errors import ApiError

log = logging.getLogger(__name__)

FlushReason = Literal["full", "idle", "wait"]
"""Why a batch left: it reached max rows; nothing else was queued and traffic is sequential; the
wait for more ran out."""


@dataclass(eq=False)
class Job:
    """One request's share of a batch: its pixels, its options, the future its answer goes to."""

    loaded: LoadedModel
    pixels: np.ndarray  # (B_i, 784)
    samples: int | None  # None: a deterministic prediction
    seed: int = 0
    return_samples: bool = False
    future: asyncio.Future[Any] = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    enqueued_at: float = 0.0

    @property
    def rows(self) -> int:
        return self.pixels.shape[0]

    @property
    def key(self) -> tuple[int, int | None]:
        """Jobs with equal keys run in one forward pass: same model, same kind and T."""
        return id(self.loaded), self.samples


Compute = Callable[[list[Job]], list[Any]]
"""Runs jobs of one key as one batch in the inference thread: one result per job, in order."""


class MicroBatcher:
    def __init__(
        self,
        compute: Compute,
        max_rows: int,
        max_wait_s: float,
        queue_max: int,
        queue_wait_s: float,
        thread_setup: Callable[[], object] | None = None,
    ) -> None:
        self.compute = compute
        self.max_rows = max_rows
        self.max_wait_s = max_wait_s
        self.queue_max = queue_max
        self.queue_wait_s = queue_wait_s
        self.flushes: Counter[FlushReason] = Counter()
        """How many batches left for each reason, for tests and /metrics."""
        self.batch_sizes: Counter[int] = Counter()
        """Requests per batch -> how many batches had that many."""
        self._queue: deque[Job] = deque()
        self._arrived = asyncio.Event()
        self._running = 0  # jobs taken off the queue whose answer is not yet out
        self._last_requests = 0
        self._executor = ThreadPoolExecutor(1, "inference", initializer=thread_setup)
        self._worker: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._worker = asyncio.get_running_loop().create_task(self._serve(), name="micro-batcher")

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
        self._executor.shutdown(wait=True)

    @property
    def waiting(self) -> int:
        """Requests queued or being computed."""
        return len(self._queue) + self._running

    def check_capacity(self) -> None:
        """Refuse with 503 when the queue is full (ShedWhenFull refuses the same before the body)."""
        if self.waiting >= self.queue_max:
            message = f"server is at capacity ({self.queue_max} requests queued); retry shortly"
            raise ApiError(503, message, headers={"Retry-After": "1"})

    async def submit(self, job: Job) -> Any:
        """Queue `job` and wait for its answer."""
        self.check_capacity()
        job.enqueued_at = asyncio.get_running_loop().time()
        self._queue.append(job)
        self._arrived.set()
        return await job.future

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._queue:
                self._arrived.clear()
                await self._arrived.wait()
            batch, reason = await self._gather()
            self.flushes[reason] += 1
            self.batch_sizes[len(batch)] += 1
            self._last_requests = len(batch)
            batch = self._shed_stale(batch, loop.time())
            self._running = len(batch)
            try:
                outcomes = await loop.run_in_executor(self._executor, self._compute_groups, batch)
                for job, outcome in zip(batch, outcomes, strict=True):
                    if job.future.done():  # its client gave up
                        continue
                    if isinstance(outcome, BaseException):
                        job.future.set_exception(outcome)
                    else:
                        job.future.set_result(outcome)
            finally:
                self._running = 0

    async def _gather(self) -> tuple[list[Job], FlushReason]:
        """The next batch: whatever is queued, up to max rows, waiting for more only under load."""
        batch = [self._queue.popleft()]
        rows = batch[0].rows
        rows = self._drain(batch, rows)
        if rows >= self.max_rows or self._queue:  # the next one did not fit
            return batch, "full"
        if self.max_wait_s <= 0 or self._last_requests <= 1:
            return batch, "idle"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_wait_s
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return batch, "wait"
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except TimeoutError:
                return batch, "wait"
            rows = self._drain(batch, rows)
            if rows >= self.max_rows or self._queue:
                return batch, "full"

    def _drain(self, batch: list[Job], rows: int) -> int:
        while self._queue and rows + self._queue[0].rows <= self.max_rows:
            job = self._queue.popleft()
            batch.append(job)
            rows += job.rows
        return rows

    def _shed_stale(self, batch: list[Job], now: float) -> list[Job]:
        """Answer 503 to jobs that queued longer than queue_wait_s or whose client left."""
        fresh = []
        for job in batch:
            if job.future.done():
                continue
            if now - job.enqueued_at > self.queue_wait_s:
                job.future.set_exception(
                    ApiError(
                        503,
                        f"waited over {self.queue_wait_s * 1000:.0f} ms in the queue; retry shortly",
                        headers={"Retry-After": "1"},
                    )
                )
                continue
            fresh.append(job)
        return fresh

    def _compute_groups(self, batch: list[Job]) -> list[Any]:
        """In the inference thread: one forward pass per key; an error fails only its group."""
        groups: dict[tuple[int, int | None], list[int]] = {}
        for index, job in enumerate(batch):
            groups.setdefault(job.key, []).append(index)
        outcomes: list[Any] = [None] * len(batch)
        for indices in groups.values():
            jobs = [batch[i] for i in indices]
            try:
                results: list[Any] = self.compute(jobs)
            except Exception as e:  # handed to each request of the group
                log.exception("batched inference failed")
                results = [e] * len(jobs)
            for i, result in zip(indices, results, strict=True):
                outcomes[i] = result
        return outcomes


class ShedWhenFull:
    """ASGI guard: while the queue is full, inference POSTs get 503 + Retry-After before routing.

    The same refusal as MicroBatcher.check_capacity, minus FastAPI's routing and dependencies: under
    overload the refusals are most of the traffic, and the cheaper they are, the more of the event
    loop is left for the requests that were accepted.
    """

    _BODY = b'{"error":{"code":"unavailable","message":"server is at capacity; retry shortly"}}'
    _HEADERS = (
        (b"content-type", b"application/json"),
        (b"content-length", str(len(_BODY)).encode()),
        (b"retry-after", b"1"),
    )

    def __init__(self, app: Any, batcher: Callable[[], MicroBatcher | None]) -> None:
        self.app = app
        self.batcher = batcher

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        batcher = self.batcher() if scope["type"] == "http" and scope["method"] == "POST" else None
        if (
            batcher is not None
            and batcher.waiting >= batcher.queue_max
            and scope["path"].endswith(("/predict", "/uncertainty"))
        ):
            await send({"type": "http.response.start", "status": 503, "headers": list(self._HEADERS)})
            await send({"type": "http.response.body", "body": self._BODY})
            return
        await self.app(scope, receive, send)
