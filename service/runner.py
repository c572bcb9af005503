"""The routes' door to inference: micro-batching, a bounded queue, a timeout per request."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch

from models.artifact import LoadedModel
from service.batching import Job, MicroBatcher
from service.errors import ApiError
from service.inference import UncertaintyResult, compute
from service.inference_process import InferenceProcess
from service.settings import Settings
from service.shedding import Admission

LONE_MAX_PASSES = 1024
"""A lone request is answered on the event loop when its inputs times its passes are at most
this (a T = 1000 MC request of one image, 64 images to predict): about a millisecond of work or
less, which blocks nothing but the next request's start."""


class InferenceRunner:
    """The routes' door to inference: micro-batches requests, bounded queue, request timeout.

    Three places to compute, by what else is in flight: a request alone in the server runs on the
    event loop (`LONE_MAX_PASSES`); a batch of one from the queue in the inference thread; a batch
    of several, with `inference_process`, in a child process (service.inference_process). All run
    the same code with the same torch thread count and give the same bytes. At one connection
    (wrk, three alternating 5 s rounds) the loop answered predict at a p50 of 0.84-0.99 ms against
    1.18-1.47 ms through the inference thread, uncertainty (T = 100) at 1.14-1.24 ms against
    1.45-1.74 ms.
    """

    def __init__(self, settings: Settings, admission: Admission | None = None) -> None:
        self.timeout_s = settings.request_timeout_s
        self.admission = admission
        self.process = InferenceProcess(settings) if settings.inference_process else None
        self.batcher = MicroBatcher(
            self._compute,
            max_rows=settings.batch_max_size,
            max_wait_s=settings.batch_max_wait_ms / 1000,
            queue_max=settings.queue_max,
            queue_wait_s=settings.queue_max_wait_ms / 1000,
            # torch's intra-op thread count is per OS thread (OpenMP): set it where inference runs
            thread_setup=lambda: torch.set_num_threads(settings.torch_threads),
        )

    def _alone(self) -> bool:
        """This request is the only inference request in flight (admitted and not answered)."""
        return self.admission is not None and self.admission.in_flight <= 1 and not self.batcher.waiting

    def _compute(self, jobs: list[Job]) -> list[Any]:
        """A batch of several requests runs in the inference process, a batch of one here.

        Under concurrency the inference thread would share this process's GIL with the busy
        event loop: at 64 connections, over three alternating rounds, uncertainty served
        1.07x, 0.91x and 1.06x predict's requests/s this way against 0.83x, 0.85x and 0.92x all
        here. A batch of one means little traffic, and the hop to the process costs two more
        wake-ups plus a cold cache there: at one connection uncertainty's p50 was 1.53-1.76x
        predict's through the process, against 1.17-1.24x this way.
        """
        if self.process is None or len(jobs) == 1:
            return compute(jobs)
        return self.process(jobs)

    async def start(self) -> None:
        if self.process is not None:
            await asyncio.to_thread(self.process.start)
        self.batcher.start()

    async def stop(self) -> None:
        """Answer what is queued, then end the inference thread and process."""
        await self.batcher.stop()
        if self.process is not None:
            await asyncio.to_thread(self.process.stop)

    async def serve_models(self, models: Iterable[LoadedModel]) -> None:
        """Make these the models the inference process holds (it loads them from their folders)."""
        if self.process is not None:
            await asyncio.to_thread(self.process.keep_loaded, [loaded.path for loaded in models])

    async def predict(
        self, loaded: LoadedModel, pixels: np.ndarray, arrived_at: float | None = None
    ) -> np.ndarray:
        """(B, 784) -> (B, C) eval-mode probabilities, batched with concurrent requests. The wait
        for a batch counts from `arrived_at` (time.monotonic()), else from now."""
        return await self._submit(Job(loaded, pixels, None), arrived_at)

    async def uncertainty(
        self,
        loaded: LoadedModel,
        pixels: np.ndarray,
        samples: int,
        seed: int,
        return_samples: bool,
        arrived_at: float | None = None,
    ) -> UncertaintyResult:
        """T MC-dropout passes seeded with `seed`, batched: the same seed, the same answer."""
        return await self._submit(Job(loaded, pixels, samples, seed, return_samples), arrived_at)

    async def _submit(self, job: Job, arrived_at: float | None) -> Any:
        if arrived_at is not None:
            job.waiting_since = arrived_at
        if self._alone() and job.rows * (job.samples or 1) <= LONE_MAX_PASSES:
            return self.batcher.compute_now(job)
        try:
            async with asyncio.timeout(self.timeout_s):  # no extra task per request, unlike wait_for
                return await self.batcher.submit(job)
        except TimeoutError:
            raise ApiError(
                503, f"inference took longer than {self.timeout_s} s", headers={"Retry-After": "1"}
            ) from None
