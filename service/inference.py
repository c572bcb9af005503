"""The model core for the service: batched predict and uncertainty, run off the event loop, and
how a batch's answers split into each request's."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from models.artifact import LoadedModel
from models.frozen import FrozenMLP
from models.mc_dropout import (
    deterministic_probabilities,
    generator_for,
    mc_dropout_logits_segments,
)
from models.uncertainty import UncertaintySummary, summarize_logits
from service.batching import Job


@dataclass(frozen=True)
class UncertaintyResult:
    """One request's MC-dropout answer."""

    summary: UncertaintySummary[np.ndarray]  # (B, ...) statistics of the request's B inputs
    samples: int
    seed: int
    sample_probabilities: np.ndarray | None  # (B, T, C) when asked for


def predict(loaded: LoadedModel, pixels: np.ndarray) -> np.ndarray:
    """(B, 784) -> (B, C) eval-mode probabilities; a row's answer does not depend on its batch."""
    return predict_probabilities(loaded.frozen, pixels)


def predict_probabilities(model: FrozenMLP, pixels: np.ndarray) -> np.ndarray:
    """(B, 784) -> (B, C) eval-mode probabilities of `model`, on its device."""
    x = torch.from_numpy(pixels).to(model.device)
    return deterministic_probabilities(model, x).numpy(force=True)


def mc_summary(
    model: FrozenMLP,
    pixels: np.ndarray,
    samples: int,
    seeds: Sequence[int],
    rows: Sequence[int],
) -> tuple[UncertaintySummary[np.ndarray], np.ndarray]:
    """Shared-prefix MC dropout over a batch of requests, request i (rows[i] consecutive inputs)
    seeded with seeds[i]: the statistics (B, ...) and the passes' probabilities (T, B, C). Each
    input's answer is the same in any batch."""
    device = model.device
    x = torch.from_numpy(pixels).to(device)
    generators = [generator_for(seed, device) for seed in seeds]
    return summarize_logits(mc_dropout_logits_segments(model, x, samples, generators, rows))


def fresh_seed() -> int:
    """A seed for a request that named none; it is reported so the answer can be reproduced."""
    return secrets.randbelow(2**31)


def batch_pixels(jobs: list[Job]) -> np.ndarray:
    """The jobs' inputs as one (B, 784) batch, job by job."""
    return np.concatenate([job.pixels for job in jobs])


def split_predictions(jobs: list[Job], probabilities: np.ndarray) -> list[np.ndarray]:
    """(B, C) probabilities of a batch -> each job's (B_i, C)."""
    return np.split(probabilities, np.cumsum([job.rows for job in jobs[:-1]]))


def split_uncertainty(
    jobs: list[Job], summary: UncertaintySummary[np.ndarray], probs: np.ndarray | None
) -> list[UncertaintyResult]:
    """A batch's statistics and passes (T, B, C) -> each job's result (its passes if it asked)."""
    samples = jobs[0].samples
    assert samples is not None
    results, first = [], 0
    for job in jobs:
        rows = slice(first, first + job.rows)
        first += job.rows
        passes = probs[:, rows].transpose(1, 0, 2) if probs is not None and job.return_samples else None
        mine = summary if len(jobs) == 1 else summary.rows(rows)  # a lone job's batch is its own
        results.append(UncertaintyResult(mine, samples, job.seed, passes))
    return results


def compute(jobs: list[Job]) -> list[Any]:
    """The batcher's compute in this process: jobs share a key, so one model and one kind."""
    loaded = jobs[0].loaded
    if jobs[0].samples is None:
        return split_predictions(jobs, predict_probabilities(loaded.frozen, batch_pixels(jobs)))
    summary, probs = mc_summary(
        loaded.frozen,
        batch_pixels(jobs),
        jobs[0].samples,
        [job.seed for job in jobs],
        [job.rows for job in jobs],
    )
    return split_uncertainty(jobs, summary, probs)
