"""Evaluation metrics of class probabilities, computed with torch (no scikit-learn)."""

from __future__ import annotations

import torch
from torch import Tensor


def accuracy(probs: Tensor, labels: Tensor) -> float:
    """probs (N, C), labels (N,)."""
    return (probs.argmax(-1) == labels).double().mean().item()


def negative_log_likelihood(probs: Tensor, labels: Tensor, eps: float = 1e-12) -> float:
    """Mean -log p(y|x), in nats."""
    return -probs.gather(1, labels[:, None]).clamp_min(eps).log().mean().item()


def brier_score(probs: Tensor, labels: Tensor) -> float:
    """Mean over inputs of the squared error sum_c (p_c - onehot_c)^2 (range 0..2)."""
    onehot = torch.nn.functional.one_hot(labels, probs.shape[-1]).to(probs.dtype)
    return (probs - onehot).pow(2).sum(-1).mean().item()


def expected_calibration_error(probs: Tensor, labels: Tensor, bins: int = 15) -> float:
    """ECE with `bins` equal-width confidence bins (Guo et al. 2017):
    sum_b |B_b|/N * |accuracy(B_b) - confidence(B_b)|. Bins are (lo, hi], the first [0, hi]."""
    confidence, predicted = probs.max(-1)
    correct = (predicted == labels).double()
    # Bin b holds confidences in (b/bins, (b+1)/bins]; ceil maps exactly b/bins into bin b-1.
    index = (torch.ceil(confidence.double() * bins) - 1).clamp(0, bins - 1).long()
    total = torch.zeros(bins, dtype=torch.float64)
    count = torch.zeros(bins, dtype=torch.float64)
    conf_sum = torch.zeros(bins, dtype=torch.float64)
    count.index_add_(0, index, torch.ones_like(correct))
    total.index_add_(0, index, correct)
    conf_sum.index_add_(0, index, confidence.double())
    gap = (total - conf_sum).abs()  # |sum correct - sum confidence| = |B| * |acc - conf|
    return (gap.sum() / max(1, len(labels))).item()


def classification_metrics(probs: Tensor, labels: Tensor) -> dict[str, float]:
    return {
        "accuracy": accuracy(probs, labels),
        "nll": negative_log_likelihood(probs, labels),
        "brier": brier_score(probs, labels),
        "ece": expected_calibration_error(probs, labels),
    }


def quantile_threshold(values: Tensor, quantile: float) -> float:
    """The `quantile` of `values` (linear interpolation), e.g. 0.95 for the OOD threshold."""
    return torch.quantile(values.double(), quantile).item()
