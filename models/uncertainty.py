"""Uncertainty math as pure functions of MC softmax samples `probs` of shape (T, B, C).

All entropies in nats. Gal & Ghahramani 2016; BALD mutual information (Houlsby et al. 2011).

The statistics are numpy float64. Each row then takes the same arithmetic whatever shares its batch
(torch's reductions vectorize differently with the batch shape, so a served answer would change
with its batch mates), and float64 keeps the small difference H[p̄] - mean H[p_t] clear of
float32 rounding. `summarize_tensor` hands the same statistics to torch code.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np
import torch
from torch import Tensor

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
    """The statistics of MC logits (T, B, C), and the passes' probabilities (T, B, C).

    All numpy float64, on a (C, B, T) copy: a numpy call costs about a microsecond where torch's
    cost five to ten, and at one image the calls are the cost. So every per-pass quantity that is
    averaged over passes (the probabilities, each pass's entropy, its vote as a one-hot) is a row
    of one array, averaged in one reduction. Sums over classes run class by class and sums over
    passes along the contiguous pass axis, so each input's arithmetic is the same whatever shares
    its batch.
    """
    z = np.array(logits.numpy(force=True).transpose(2, 1, 0), dtype=np.float64, order="C")  # (C, B, T)
    classes = z.shape[0]
    votes = z.argmax(0)  # (B, T): each pass's class
    z -= z.max(0)  # exp cannot overflow
    per_pass = np.empty((2 * classes + 1, *votes.shape))  # rows: probabilities, entropy, one-hot vote
    probs = np.exp(z, out=per_pass[:classes])
    normalizer = _sum_over_classes(probs)  # (B, T)
    probs /= normalizer
    # each pass's entropy -sum p log p, with log p = z - log(normalizer) and sum p = 1
    z *= probs
    np.subtract(np.log(normalizer), _sum_over_classes(z), out=per_pass[classes])
    np.equal(votes, _class_ids(classes), out=per_pass[classes + 1 :])
    means = _mean_over_passes(per_pass)  # (2C + 1, B)
    mean = means[:classes]  # (C, B)
    spread = np.subtract(probs, mean[..., None], out=z)
    spread *= spread
    mean_probabilities = np.ascontiguousarray(mean.T)  # (B, C): each row's entropy summed alike
    aleatoric, total = means[classes], entropy(mean_probabilities)
    summary = UncertaintySummary(
        mean_probabilities=mean_probabilities,
        std=np.sqrt(_mean_over_passes(spread)).T,
        predictive_entropy=total,
        expected_entropy=aleatoric,
        mutual_information=np.maximum(total - aleatoric, 0.0),
        variation_ratio=1.0 - np.maximum.reduce(means[classes + 1 :], axis=0),  # 1 - modal votes / T
    )
    return summary, probs.transpose(2, 1, 0)


_CLASS_IDS: dict[int, np.ndarray] = {}


def _class_ids(classes: int) -> np.ndarray:
    """arange(classes) as (C, 1, 1), made once per C: compared with votes (B, T), a one-hot."""
    ids = _CLASS_IDS.get(classes)
    if ids is None:
        ids = _CLASS_IDS[classes] = np.arange(classes)[:, None, None]
    return ids


def _sum_over_classes(values: np.ndarray) -> np.ndarray:
    """(C, ...) -> (...), added class by class in order. numpy reduces a leading axis so, one row
    after the other, except when the rest is a single value: then it sums that axis pairwise, and
    a row's sum would change with its batch; that case adds the rows itself."""
    if values[0].size > 1:
        return np.add.reduce(values, axis=0)
    total = values[0].copy()
    for row in values[1:]:
        total += row
    return total


def _mean_over_passes(values: np.ndarray) -> np.ndarray:
    """(..., T) float64 -> (...): the contiguous last axis summed pairwise, row by row (an
    unbuffered reduction: a cast on the fly would cut rows at the buffer's edges)."""
    return np.add.reduce(values, axis=-1) / values.shape[-1]


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
