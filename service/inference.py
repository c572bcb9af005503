"""Runs the model core off the event loop, with a bounded number of waiting requests."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch
from starlette.concurrency import run_in_threadpool

from models.artifact import LoadedModel
from models.mc_dropout import deterministic_probabilities, generator_for, mc_dropout_probabilities
from models.uncertainty import summarize
from service.errors import ApiError

T = TypeVar("T")


@dataclass(frozen=True)
class UncertaintyResult:
    """Numpy views of an UncertaintySummary; every array has batch size B first."""

    mean_probabilities: np.ndarray  # (B, C)
    std: np.ndarray  # (B, C)
    predictive_entropy: np.ndarray  # (B,)
    expected_entropy: np.ndarray  # (B,)
    mutual_information: np.ndarray  # (B,)
    variation_ratio: np.ndarray  # (B,)
    samples: int
    seed: int
    sample_probabilities: np.ndarray | None  # (B, T, C) when asked for


def predict(loaded: LoadedModel, pixels: np.ndarray) -> np.ndarray:
    """(B, 784) -> (B, C) eval-mode probabilities."""
    x = torch.from_numpy(pixels).to(next(loaded.model.parameters()).device)
    return deterministic_probabilities(loaded.model, x).cpu().numpy()


def uncertainty(
    loaded: LoadedModel, pixels: np.ndarray, samples: int, seed: int, return_samples: bool
) -> UncertaintyResult:
    """T MC-dropout passes from a generator seeded with `seed`: the same seed, the same answer."""
    device = next(loaded.model.parameters()).device
    x = torch.from_numpy(pixels).to(device)
    probs = mc_dropout_probabilities(loaded.model, x, samples, generator_for(seed, device))  # (T, B, C)
    summary = summarize(probs)
    return UncertaintyResult(
        mean_probabilities=summary.mean_probabilities.cpu().numpy(),
        std=summary.std.cpu().numpy(),
        predictive_entropy=summary.predictive_entropy.cpu().numpy(),
        expected_entropy=summary.expected_entropy.cpu().numpy(),
        mutual_information=summary.mutual_information.cpu().numpy(),
        variation_ratio=summary.variation_ratio.cpu().numpy(),
        samples=samples,
        seed=seed,
        sample_probabilities=probs.transpose(0, 1).cpu().numpy() if return_samples else None,
    )


def fresh_seed() -> int:
    """A seed for a request that named none; it is reported so the answer can be reproduced."""
    return secrets.randbelow(2**31)


class InferenceRunner:
    """Admits at most `queue_max` requests at once and runs each in a worker thread."""

    def __init__(self, queue_max: int, timeout_s: float) -> None:
        self.queue_max = queue_max
        self.timeout_s = timeout_s
        self.in_flight = 0

    async def run(self, function: Callable[..., T], *args: Any) -> T:
        if self.in_flight >= self.queue_max:
            raise ApiError(503, "server is at capacity; retry shortly", headers={"Retry-After": "1"})
        self.in_flight += 1
        try:
            return await asyncio.wait_for(run_in_threadpool(function, *args), self.timeout_s)
        except TimeoutError:
            raise ApiError(
                503, f"inference took longer than {self.timeout_s} s", headers={"Retry-After": "1"}
            ) from None
        finally:
            self.in_flight -= 1
