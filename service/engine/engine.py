"""The routes' door to inference: the models held, and the scheduler that computes for them."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, cast

import numpy as np

from models.artifact import LoadedModel
from models.spec import ConformalLevel
from service.engine import compute
from service.engine.compute import UncertaintyResult
from service.engine.errors import RepositoryUnavailable
from service.engine.registry import ModelRegistry, VersionResult
from service.engine.scheduler import JobTimings, Scheduler

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class JobReport:
    """One answered inference job, for metrics and logs (never part of an answer)."""

    loaded: LoadedModel  # the version that answered
    instances: int
    samples: int  # MC passes; 0 for a deterministic prediction
    timings: JobTimings
    result: UncertaintyResult | None = None  # the answer of an MC job


class EngineObserver(Protocol):
    """What the engine tells whoever watches it (the HTTP layer's metrics and access logs).
    `job_done` is called in the task that awaited the job, so it can tell whose job it was."""

    def round_done(self, jobs: int) -> None: ...

    def job_done(self, report: JobReport) -> None: ...

    def models_changed(self, loaded: list[LoadedModel]) -> None:
        """Every version held, after each (re)load; may be called from a reload thread."""


class Engine:
    def __init__(
        self,
        repository: Path,
        device: str,
        queue_max: int,
        queue_wait_s: float,
        timeout_s: float,
        slice_s: float,
        observer: EngineObserver | None = None,
        poll_interval_s: float | None = None,
    ) -> None:
        on_change = observer.models_changed if observer is not None else None
        self.registry = ModelRegistry(repository, device, on_change=on_change)
        self.observer = observer
        self.poll_interval_s = poll_interval_s
        self._poller: asyncio.Task[None] | None = None
        on_round = observer.round_done if observer is not None else None
        self.scheduler = Scheduler(queue_max, queue_wait_s, timeout_s, slice_s, on_round)

    async def start(self) -> None:
        self.registry.load_all()
        self.scheduler.start()
        if self.poll_interval_s is not None:
            self._poller = asyncio.get_running_loop().create_task(self._poll(self.poll_interval_s))

    async def stop(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            self._poller = None
        await self.scheduler.stop()

    async def reload(self, name: str | None = None) -> dict[str, list[VersionResult]]:
        """Rescan the repository, or one model's folder, in a thread (reading files and building
        networks never holds the event loop); requests keep the version they started with."""
        if name is None:
            return await asyncio.to_thread(self.registry.load_all)
        return {name: await asyncio.to_thread(self.registry.load_model, name)}

    async def _poll(self, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self.reload()
            except RepositoryUnavailable as e:
                log.error("%s; trying again in %g s", e.message, interval_s)
            except Exception:  # a transient file-system error must not end the polling
                log.exception("rescanning the model repository failed; trying again in %g s", interval_s)

    async def predict(
        self, loaded: LoadedModel, pixels: np.ndarray, timeout_s: float | None = None
    ) -> np.ndarray:
        """(B, 784) pixels in [0, 1] -> (B, C) eval-mode probabilities. `timeout_s`, here and in
        `uncertainty`: the client's own bound, when shorter than the engine's (TimedOut past it)."""
        timings = JobTimings()
        steps = compute.predict(loaded, pixels)
        probabilities = cast(np.ndarray, await self.scheduler.run(steps, timings, timeout_s))
        if self.observer is not None:
            self.observer.job_done(JobReport(loaded, len(pixels), 0, timings))
        return probabilities

    async def uncertainty(
        self,
        loaded: LoadedModel,
        pixels: np.ndarray,
        samples: int,
        seed: int,
        return_samples: bool,
        level: ConformalLevel | None = None,
        timeout_s: float | None = None,
    ) -> UncertaintyResult:
        """`samples` MC-dropout passes seeded with `seed`: the same seed, the same answer. With a
        conformal `level` of the artifact's, also prediction sets and abstain flags."""
        timings = JobTimings()
        steps = compute.uncertainty(loaded, pixels, samples, seed, return_samples, level)
        result = cast(UncertaintyResult, await self.scheduler.run(steps, timings, timeout_s))
        if self.observer is not None:
            self.observer.job_done(JobReport(loaded, len(pixels), samples, timings, result))
        return result
