"""One request's inference, as steps the scheduler can interleave and stop between.

A job is a generator: each `next()` runs one bounded step (a chunk of MC passes, or a whole
prediction) and the generator's return value is the answer. Every step works on this request's
inputs alone, in calls whose shapes depend only on the request, so its arithmetic, and so its
bytes, never depend on what else the engine is serving.
"""

from __future__ import annotations

import math
from collections.abc import Generator
from dataclasses import dataclass

import numpy as np
import torch

from models.artifact import LoadedModel
from models.calibration import abstains, apply_temperature
from models.conformal import prediction_sets
from models.mc_dropout import MaskSource, mc_dropout_chunks, passes_per_chunk, predict_logits
from models.spec import ConformalLevel
from models.uncertainty import PassStatistics, UncertaintySummary

Steps = Generator[None, None, object]


@dataclass(frozen=True)
class UncertaintyResult:
    """One request's MC-dropout answer."""

    summary: UncertaintySummary  # (B, ...) statistics of the request's B inputs
    samples: int
    seed: int
    sample_probabilities: np.ndarray | None  # (B, T, C) float64, when asked for
    probabilities: np.ndarray  # (B, C) the answer's: p̄ scaled by the artifact's temperature
    ood: np.ndarray  # (B,) bool: mutual information above the artifact's calibrated threshold
    level: ConformalLevel | None = None  # the conformal level asked for, if any; then:
    prediction_sets: np.ndarray | None = None  # (B, C) bool set membership at `level`
    abstain: np.ndarray | None = None  # (B,) bool, per the artifact's abstention policy


def _inputs(loaded: LoadedModel, pixels: np.ndarray) -> torch.Tensor:
    """(B, 784) float32 pixels -> a tensor of its own on the model's device. `torch.tensor` copies
    into a fresh (64-byte aligned) buffer, so BLAS sees the same layout for the same request."""
    return torch.tensor(pixels, dtype=torch.float32, device=loaded.device)


def predict(loaded: LoadedModel, pixels: np.ndarray) -> Steps:
    """(B, 784) -> (B, C) eval-mode probabilities (float32), in one step."""
    yield from ()  # a single step: all of it runs on the first next()
    logits = predict_logits(loaded.weights, _inputs(loaded, pixels))
    return torch.softmax(logits, dim=-1).numpy(force=True)


def uncertainty_steps(loaded: LoadedModel, instances: int, samples: int) -> int:
    """How many steps `uncertainty` takes: one per chunk of passes."""
    return math.ceil(samples / passes_per_chunk(loaded.weights, instances))


def uncertainty(
    loaded: LoadedModel,
    pixels: np.ndarray,
    samples: int,
    seed: int,
    return_samples: bool,
    level: ConformalLevel | None = None,
) -> Steps:
    """`samples` MC-dropout passes seeded with `seed`, one chunk of passes per step; with a conformal
    `level` (one of the artifact's), also the prediction sets and the abstain flags."""
    classes = loaded.manifest.spec.num_classes
    statistics = PassStatistics(len(pixels), classes)
    # (B, T, C), filled chunk by chunk; C-contiguous, so the answer serializes it as it is
    samples_out = np.empty((len(pixels), samples, classes)) if return_samples else None
    chunks = uncertainty_steps(loaded, len(pixels), samples)
    passes = mc_dropout_chunks(loaded.weights, _inputs(loaded, pixels), samples, MaskSource(seed))
    done = 0  # passes so far
    for index, logits in enumerate(passes):
        probs = statistics.add(logits)  # (t, B, C)
        if samples_out is not None:
            samples_out[:, done : done + len(probs)] = probs.transpose(1, 0, 2)
        done += len(probs)
        if index + 1 < chunks:  # the last chunk and the summary make one step
            yield
    summary = statistics.summary()
    manifest = loaded.manifest
    probabilities = apply_temperature(summary.mean_probabilities, manifest.calibration.temperature)
    ood = summary.out_of_distribution(manifest.calibration.ood_threshold)
    if level is None:
        return UncertaintyResult(summary, samples, seed, samples_out, probabilities, ood)
    policy = manifest.abstention
    refused = None if policy is None else abstains(summary, policy)
    members = prediction_sets(probabilities, level)
    return UncertaintyResult(summary, samples, seed, samples_out, probabilities, ood, level, members, refused)
