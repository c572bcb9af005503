"""Uncertainty math as pure functions of MC softmax samples `probs` of shape (T, B, C).

All entropies in nats. Gal & Ghahramani 2016; BALD mutual information (Houlsby et al. 2011).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


def entropy(probs: Tensor, dim: int = -1) -> Tensor:
    """Shannon entropy in nats along `dim`, with 0 log 0 = 0."""
    return -torch.special.xlogy(probs, probs).sum(dim)


def predictive_entropy(probs: Tensor) -> Tensor:
    """H[mean_t p_t]: total uncertainty. (T, B, C) -> (B,)"""
    return entropy(probs.mean(0))


def expected_entropy(probs: Tensor) -> Tensor:
    """mean_t H[p_t]: aleatoric uncertainty. (T, B, C) -> (B,)"""
    return entropy(probs).mean(0)


def mutual_information(probs: Tensor) -> Tensor:
    """H[p̄] - mean_t H[p_t]: epistemic uncertainty, clamped at 0 against rounding. (B,)"""
    return (predictive_entropy(probs) - expected_entropy(probs)).clamp_min(0.0)


def variation_ratio(probs: Tensor) -> Tensor:
    """1 - (passes voting for the modal class) / T. (T, B, C) -> (B,)"""
    samples, _, classes = probs.shape
    votes = torch.nn.functional.one_hot(probs.argmax(-1), classes).sum(0)  # (B, C)
    return 1.0 - votes.max(-1).values.to(probs.dtype) / samples


@dataclass(frozen=True)
class UncertaintySummary:
    """Per-input statistics of T stochastic passes; every field has batch size B first."""

    mean_probabilities: Tensor  # (B, C)
    std: Tensor  # (B, C), population std over passes
    predictive_entropy: Tensor  # (B,)
    expected_entropy: Tensor  # (B,)
    mutual_information: Tensor  # (B,)
    variation_ratio: Tensor  # (B,)


def summarize(probs: Tensor) -> UncertaintySummary:
    """All statistics of the (T, B, C) samples, sharing the intermediate results."""
    mean = probs.mean(0)  # (B, C)
    total = entropy(mean)
    aleatoric = entropy(probs).mean(0)
    return UncertaintySummary(
        mean_probabilities=mean,
        std=probs.std(0, correction=0),
        predictive_entropy=total,
        expected_entropy=aleatoric,
        mutual_information=(total - aleatoric).clamp_min(0.0),
        variation_ratio=variation_ratio(probs),
    )
