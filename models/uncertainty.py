"""Uncertainty statistics of T stochastic passes: the one implementation, for training and service.

All entropies in nats (Gal & Ghahramani 2016; BALD mutual information, Houlsby et al. 2011). The
arithmetic is the compiled kernel's (models/_kernels.c): float64, each input in its own fixed
loop, so an input's statistics do not depend on the batch around it, and the small difference
H[p̄] - mean_t H[p_t] stays clear of float32 rounding.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models import _kernels


@dataclass(frozen=True)
class UncertaintySummary:
    """Per-input statistics of T passes; every field has the batch size B first."""

    mean_probabilities: np.ndarray  # (B, C): p̄, the mean of the passes' softmax
    std: np.ndarray  # (B, C): population std of the passes' softmax
    predictive_entropy: np.ndarray  # (B,): H[p̄], total uncertainty
    expected_entropy: np.ndarray  # (B,): mean_t H[p_t], aleatoric
    mutual_information: np.ndarray  # (B,): their difference clamped at 0, epistemic
    variation_ratio: np.ndarray  # (B,): 1 - (passes voting for the modal class) / T

    def out_of_distribution(self, threshold: float | None) -> np.ndarray:
        """(B,) bool: mutual information above the artifact's calibrated `threshold`, the one OOD
        rule (the service's `ood` answers and its metrics); with no threshold nothing is flagged."""
        if threshold is None:
            return np.zeros(len(self.mutual_information), dtype=bool)
        return self.mutual_information > threshold

    @classmethod
    def concatenate(cls, parts: list[UncertaintySummary]) -> UncertaintySummary:
        """The statistics of consecutive batches as one."""
        return cls(*(np.concatenate([getattr(p, name) for p in parts]) for name in cls.__dataclass_fields__))


def entropy(probs: np.ndarray, axis: int = -1) -> np.ndarray:
    """Shannon entropy in nats along `axis`, with 0 log 0 = 0."""
    return -np.sum(probs * np.log(np.where(probs > 0, probs, 1.0)), axis=axis)


class PassStatistics:
    """The statistics of B inputs' passes, added in chunks of (t, B, C) logits: memory stays that
    of one chunk whatever T."""

    def __init__(self, inputs: int, classes: int) -> None:
        self.classes = classes
        self.state = np.zeros((inputs, 2 + 3 * classes))  # per input: see models/_kernels.c

    def add(self, logits: np.ndarray) -> np.ndarray:
        """Add passes' logits (t, B, C); returns their softmax (t, B, C) float64."""
        logits = np.ascontiguousarray(logits, dtype=np.float32)
        probs = np.empty(logits.shape)
        _kernels.accumulate(logits, self.state, probs)
        return probs

    def summary(self) -> UncertaintySummary:
        c = self.classes
        stats = np.empty((len(self.state), 2 * c + 4))
        _kernels.finish(self.state, stats)
        return UncertaintySummary(
            mean_probabilities=stats[:, :c],
            std=stats[:, c : 2 * c],
            predictive_entropy=stats[:, 2 * c],
            expected_entropy=stats[:, 2 * c + 1],
            mutual_information=stats[:, 2 * c + 2],
            variation_ratio=stats[:, 2 * c + 3],
        )


def summarize_logits(logits: np.ndarray) -> tuple[UncertaintySummary, np.ndarray]:
    """MC logits (T, B, C) -> (their statistics, the passes' probabilities (T, B, C) float64)."""
    statistics = PassStatistics(logits.shape[1], logits.shape[2])
    probs = statistics.add(logits)
    return statistics.summary(), probs
