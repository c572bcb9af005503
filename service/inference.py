"""The model core for the service: batched predict and uncertainty, run off the event loop."""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from models.artifact import LoadedModel
from models.mc_dropout import (
    deterministic_probabilities,
    generator_for,
    mc_dropout_logits_segments,
)
from models.uncertainty import UncertaintySummary, summarize_logits
from service.batching import Job, MicroBatcher
from service.errors import ApiError
from service.settings import Settings


@dataclass(frozen=True)
class UncertaintyResult:
    """One request's MC-dropout answer."""

    summary: UncertaintySummary[np.ndarray]  # (B, ...) statistics of the request's B inputs
    samples: int
    seed: int
    sample_probabilities: np.ndarray | None  # (B, T, C) when asked for


def predict(loaded: LoadedModel, pixels: np.ndarray) -> np.ndarray:
    """(B, 784) -> (B, C) eval-mode probabilities; a row's answer does not depend on its batch."""
    x = torch.from_numpy(pixels).to(loaded.device)
    return deterministic_probabilities(loaded.model, x).numpy(force=True)


def fresh_seed() -> int:
    """A seed for a request that named none; it is reported so the answer can be reproduced."""
    return secrets.randbelow(2**31)


def predict_batch(jobs: list[Job]) -> list[np.ndarray]:
    """Deterministic predictions of jobs of one model as one forward pass: each job's (B_i, C)."""
    loaded = jobs[0].loaded
    probabilities = predict(loaded, np.concatenate([job.pixels for job in jobs]))
    return np.split(probabilities, np.cumsum([job.rows for job in jobs[:-1]]))


def uncertainty_batch(jobs: list[Job]) -> list[UncertaintyResult]:
    """MC dropout for jobs of one model and T as one shared-prefix pass, each with its own seed."""
    loaded, samples = jobs[0].loaded, jobs[0].samples
    assert samples is not None
    device = loaded.device
    x = torch.from_numpy(np.concatenate([job.pixels for job in jobs])).to(device)
    generators = [generator_for(job.seed, device) for job in jobs]
    logits = mc_dropout_logits_segments(loaded.model, x, samples, generators, [job.rows for job in jobs])
    summary, probs = summarize_logits(logits)  # each input alone: the same answer in any batch
    results, first = [], 0
    for job in jobs:
        rows = slice(first, first + job.rows)
        first += job.rows
        results.append(
            UncertaintyResult(
                summary=summary.rows(rows),
                samples=samples,
                seed=job.seed,
                sample_probabilities=probs[:, rows].transpose(1, 0, 2) if job.return_samples else None,
            )
        )
    return results


def compute(jobs: list[Job]) -> list[Any]:
    """The batcher's compute: jobs share a key, so one model and one kind."""
    return predict_batch(jobs) if jobs[0].samples is None else uncertainty_batch(jobs)


class InferenceRunner:
    """The routes' door to inference: micro-batches requests, bounded queue, request timeout."""

    def __init__(self, settings: Settings) -> None:
        self.timeout_s = settings.request_timeout_s
        self.batcher = MicroBatcher(
            compute,
            max_rows=settings.batch_max_size,
            max_wait_s=settings.batch_max_wait_ms / 1000,
            queue_max=settings.queue_max,
            queue_wait_s=settings.queue_max_wait_ms / 1000,
            # torch's intra-op thread count is per OS thread (OpenMP): set it where inference runs
            thread_setup=lambda: torch.set_num_threads(settings.torch_threads),
        )

    async def predict(self, loaded: LoadedModel, pixels: np.ndarray) -> np.ndarray:
        """(B, 784) -> (B, C) eval-mode probabilities, batched with concurrent requests."""
        return await self._submit(Job(loaded, pixels, None))

    async def uncertainty(
        self, loaded: LoadedModel, pixels: np.ndarray, samples: int, seed: int, return_samples: bool
    ) -> UncertaintyResult:
        """T MC-dropout passes seeded with `seed`, batched: the same seed, the same answer."""
        return await self._submit(Job(loaded, pixels, samples, seed, return_samples))

    async def _submit(self, job: Job) -> Any:
        try:
            async with asyncio.timeout(self.timeout_s):  # no extra task per request, unlike wait_for
                return await self.batcher.submit(job)
        except TimeoutError:
            raise ApiError(
                503, f"inference took longer than {self.timeout_s} s", headers={"Retry-After": "1"}
            ) from None
