"""Uncertainty math as pure functions of MC softmax samples `probs` of shape (T, B, C).

All entropies in nats. Gal & Ghahramani 2016; BALD mutual information (Houlsby et al. 2011).

The statistics are numpy float64. Each row then takes the same arithmetic whatever shares its batch
(torch's reductions vectorize differently with the batch shape, so a served answer would change
with its batch mates), and float64 keeps the small difference H[p̄] - mean H[p_t] clear of
float32 rounding. `summarize_tensor` hands the same statistics to torch code; `summarize_logits`,
the service's path, computes them from logits in one call of a compiled kernel (models/_kernels.c).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np
import torch
from torch import Tensor

from models import _kernels

ArrayT = TypeVar("ArrayT", np.ndarray, Tensor)


def entropy(probs: np.ndarray, axis: int = -1) -> np.ndarray:
    """Shannon entropy in nats along `axis`, with 0 log 0 = 0."""
    return -np.add.reduce(probs * np.log(np.where(probs > 0, probs, 1.0)), axis=axis)


def by_input(values: np.ndarray) -> np.ndarray:
    """Per-pass values (T, B, ...) -> (B, T, ...) float64, contiguous, to be averaged over axis 1.
    Every input is then summed the same way whatever B: numpy sums a contiguous axis pairwise and
    others in sequence, and in (T, B, ...) whether the pass axis is contiguous depends on B."""
    return np.ascontiguousarray(np.swapaxes(values, 0, 1), dtype=np.float64)  # one copy


def pass_mean(values: np.ndarray) -> np.ndarray:
    """Mean over axis 1 of `by_input` values: the arithmetic of ndarray.mean without its
    Python-level wrapper, a third of the time of a one-image summary."""
    return np.add.reduce(values, axis=1) / values.shape[1]


def predictive_entropy(probs: np.ndarray) -> np.ndarray:
    """H[mean_t p_t]: total uncertainty. (T, B, C) -> (B,)"""
    return summarize(probs).predictive_entropy


def expected_entropy(probs: np.ndarray) -> np.ndarray:
    """mean_t H[p_t]: aleatoric uncertainty. (T, B, C) -> (B,)"""
    return summarize(probs).expected_entropy


def mutual_information(probs: np.ndarray) -> np.ndarray:
    """H[p̄] - mean_t H[p_t]: epistemic uncertainty, clamped at 0 against rounding. (B,)"""
    return summarize(probs).mutual_information


def variation_ratio(probs: np.ndarray) -> np.ndarray:
    """1 - (passes voting for the modal class) / T. (T, B, C) -> (B,)"""
    return _variation_ratio(probs.argmax(-1), probs.shape[-1])


def _variation_ratio(votes: np.ndarray, classes: int) -> np.ndarray:
    """Each pass's vote (T, B) -> 1 - (votes for the modal class) / T, (B,); counts are exact."""
    samples, inputs = votes.shape
    cells = (votes + classes * np.arange(inputs)).ravel()  # input b's class c -> cell b * C + c
    counts = np.bincount(cells, minlength=inputs * classes).reshape(inputs, classes)
    return 1.0 - counts.max(-1) / samples


@dataclass(frozen=True)
class UncertaintySummary(Generic[ArrayT]):
    """Per-input statistics of T stochastic passes; every field has batch size B first."""

    mean_probabilities: ArrayT  # (B, C)
    std: ArrayT  # (B, C), population std over passes
    predictive_entropy: ArrayT  # (B,)
    expected_entropy: ArrayT  # (B,)
    mutual_information: ArrayT  # (B,)
    variation_ratio: ArrayT  # (B,)

    def rows(self, index: slice) -> UncertaintySummary[ArrayT]:
        """The statistics of the inputs in `index`."""
        return UncertaintySummary(
            self.mean_probabilities[index],
            self.std[index],
            self.predictive_entropy[index],
            self.expected_entropy[index],
            self.mutual_information[index],
            self.variation_ratio[index],
        )


def summarize(probs: np.ndarray) -> UncertaintySummary[np.ndarray]:
    """All statistics of the (T, B, C) samples in float64."""
    probs = np.asarray(probs, dtype=np.float64)
    return _over_passes(probs, pass_mean(by_input(entropy(probs))), probs.argmax(-1))


def summarize_logits(logits: Tensor) -> tuple[UncertaintySummary[np.ndarray], np.ndarray]:
    """The statistics of MC logits (T, B, C), and the passes' probabilities (T, B, C), float64.

    One call of the compiled kernel (models/_kernels.c) on a (B, C, T) float32 copy of the logits
    (no copy for the folded sampler's, which are made so): at one image the numpy version's thirty
    calls were the cost, 63 us against 17 now in a server at one connection (T = 100). The
    statistics are views of one (B, 2C + 4) array, equal to `summarize` of the passes' softmax to
    float rounding.
    """
    z = np.ascontiguousarray(logits.numpy(force=True).transpose(1, 2, 0), dtype=np.float32)
    inputs, classes, _ = z.shape
    probs = np.empty(z.shape)  # (B, C, T)
    stats = np.empty((inputs, 2 * classes + 4))
    _kernels.summarize(z, probs, stats)
    summary = UncertaintySummary(
        mean_probabilities=stats[:, :classes],
        std=stats[:, classes : 2 * classes],
        predictive_entropy=stats[:, 2 * classes],
        expected_entropy=stats[:, 2 * classes + 1],
        mutual_information=stats[:, 2 * classes + 2],
        variation_ratio=stats[:, 2 * classes + 3],
    )
    return summary, probs.transpose(2, 0, 1)


def _over_passes(
    probs: np.ndarray, aleatoric: np.ndarray, votes: np.ndarray
) -> UncertaintySummary[np.ndarray]:
    """Per-pass probabilities (T, B, C), the mean of their entropies (B,) and votes (T, B) -> the
    statistics."""
    samples = by_input(probs)  # (B, T, C)
    mean = pass_mean(samples)  # (B, C)
    total = entropy(mean)
    return UncertaintySummary(
        mean_probabilities=mean,
        std=np.sqrt(pass_mean(np.square(samples - mean[:, None]))),
        predictive_entropy=total,
        expected_entropy=aleatoric,
        mutual_information=np.maximum(total - aleatoric, 0.0),
        variation_ratio=_variation_ratio(votes, probs.shape[-1]),
    )


def summarize_tensor(probs: Tensor) -> UncertaintySummary[Tensor]:
    """`summarize` for torch callers: tensors on probs' device, in its dtype."""
    summary = summarize(probs.detach().cpu().double().numpy())
    return UncertaintySummary(
        **{
            field.name: torch.from_numpy(getattr(summary, field.name)).to(probs.device, probs.dtype)
            for field in dataclasses.fields(summary)
        }
    )
