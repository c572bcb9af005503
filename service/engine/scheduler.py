"""The engine's scheduler: continuous micro-batching of compute steps on the event loop.

Routes hand in a job (a generator of bounded steps, service.engine.compute) once its request is
ready to compute: body read and decoded. One task on the event loop serves every job: each round
it takes in all that queued up since the last one (the micro-batch), runs one step of each in turn,
and hands the loop back once `slice_s` of compute has passed, so that I/O (new requests, /healthz)
is never held for longer than a step. Jobs that need many steps (large T) share rounds with the
rest instead of holding them up. A request's arithmetic is its own (see compute.py), so nothing
is gained by fusing requests into one tensor, and nothing depends on who shares a round.

Bounds, each with its engine error (the HTTP layer maps them to statuses): at most `queue_max` jobs
queued or running (Overloaded); a job that waited longer than `queue_wait_s` for its first step is
refused (Overloaded); a job running past `timeout_s` (or its request's own, shorter bound) is
stopped at its next step (TimedOut).

What each job cost (its wait for a first step, its own compute, the size of its first round) is
filled into its JobTimings, and `on_round` hears each round's size: for metrics and logs, never
part of an answer.

Scaling past one core is left to more worker processes (`DROPSERVE_WORKERS`, service/workers.py)
or replicas, each with its engine.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from service.engine.compute import Steps
from service.engine.errors import Overloaded, Stopping, TimedOut

log = logging.getLogger(__name__)


@dataclass
class JobTimings:
    """What one job cost, filled in by the scheduler as it runs."""

    queue_wait_s: float = 0.0  # from being queued to its first step
    compute_s: float = 0.0  # in its own steps, summed
    steps: int = 0
    round_size: int = 0  # jobs stepped in the round of its first step (its micro-batch)


@dataclass(eq=False)
class Job:
    steps: Steps
    future: asyncio.Future[object]
    timeout_s: float  # from being queued to its answer; stopped at its next step past it
    timings: JobTimings = field(default_factory=JobTimings)
    queued_at: float = field(default_factory=time.monotonic)


class Scheduler:
    def __init__(
        self,
        queue_max: int,
        queue_wait_s: float,
        timeout_s: float,
        slice_s: float,
        on_round: Callable[[int], None] | None = None,
    ) -> None:
        self.queue_max = queue_max
        self.queue_wait_s = queue_wait_s
        self.timeout_s = timeout_s
        self.slice_s = slice_s
        self.on_round = on_round  # hears the jobs stepped in each round
        self.rounds = 0  # rounds run, for tests and metrics
        self._queued: deque[Job] = deque()  # waiting for their first step
        self._running: deque[Job] = deque()  # started, in round-robin order
        self._stepping = 0  # 1 while a job's step runs (it is then in neither deque)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    @property
    def jobs(self) -> int:
        """Jobs queued or running, the one taking its step included."""
        return len(self._queued) + len(self._running) + self._stepping

    def start(self) -> None:
        self._stopping = False
        self._task = asyncio.get_running_loop().create_task(self._serve(), name="dropserve-scheduler")

    async def stop(self) -> None:
        """Take no new jobs; finish those already in, then end."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            await self._task
            self._task = None

    async def run(
        self, steps: Steps, timings: JobTimings | None = None, timeout_s: float | None = None
    ) -> object:
        """Queue a job and wait for its answer (or its error); `timings`, when given, is filled in.
        `timeout_s`: a client's own bound, which only shortens the scheduler's."""
        if self._stopping:
            steps.close()
            raise Stopping("the server is shutting down; retry on another replica")
        if self.jobs >= self.queue_max:
            steps.close()
            raise Overloaded(
                f"server is at capacity ({self.queue_max} requests in the engine); retry shortly"
            )
        timings = timings if timings is not None else JobTimings()
        bound = self.timeout_s if timeout_s is None else min(timeout_s, self.timeout_s)
        job = Job(steps, asyncio.get_running_loop().create_future(), bound, timings)
        self._queued.append(job)
        self._wake.set()
        return await job.future

    async def _serve(self) -> None:
        while True:
            if not self.jobs:
                if self._stopping:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            self._take_queued(time.monotonic())
            stepped = self._round()
            self.rounds += 1
            if self.on_round is not None:
                self.on_round(stepped)
            await asyncio.sleep(0)  # the loop's I/O runs between rounds

    def _take_queued(self, now: float) -> None:
        """Move every queued job into the round, refusing those that waited too long."""
        while self._queued:
            job = self._queued.popleft()
            if now - job.queued_at > self.queue_wait_s:
                waited = f"waited {(now - job.queued_at) * 1000:.0f} ms for compute"
                _finish(job, error=Overloaded(f"{waited}, over the {self.queue_wait_s * 1000:.0f} ms bound"))
            else:
                self._running.append(job)

    def _round(self) -> int:
        """One step of each running job, in turn, until all had one or the slice is used up;
        returns how many jobs it stepped."""
        deadline = time.monotonic() + self.slice_s
        stepped = 0
        first_steps: list[JobTimings] = []  # of the jobs whose first step is in this round
        for _ in range(len(self._running)):
            job = self._running.popleft()
            if job.future.done():  # its request was cancelled
                job.steps.close()
                continue
            started = time.monotonic()
            if started - job.queued_at > job.timeout_s:
                _finish(
                    job, error=TimedOut(f"inference took longer than {job.timeout_s:g} s; it was stopped")
                )
                continue
            if not job.timings.steps:
                first_steps.append(job.timings)
            stepped += 1
            self._stepping = 1
            try:
                if self._step(job, started):
                    self._running.append(job)
            finally:
                self._stepping = 0
            if time.monotonic() > deadline:
                break
        # Finished jobs' awaiters resume only once the loop runs again, after these are set.
        for timings in first_steps:
            timings.round_size = stepped
        return stepped

    def _step(self, job: Job, started: float) -> bool:
        """Run one step of `job`; False once it has finished (its future then holds the answer)."""
        timings = job.timings
        if not timings.steps:
            timings.queue_wait_s = started - job.queued_at
        timings.steps += 1
        try:
            next(job.steps)
        except StopIteration as done:
            _finish(job, result=done.value)
            return False
        except Exception as error:  # a bug: this request fails, the engine goes on
            log.exception("inference failed")
            _finish(job, error=error)
            return False
        finally:
            timings.compute_s += time.monotonic() - started
        return True


def _finish(job: Job, result: object = None, error: BaseException | None = None) -> None:
    job.steps.close()
    if job.future.done():
        return
    if error is not None:
        job.future.set_exception(error)
    else:
        job.future.set_result(result)
