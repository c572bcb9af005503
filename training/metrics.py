"""Evaluation metrics of class probabilities and uncertainty scores, computed with torch.

No scikit-learn: ECE, AUROC and average precision are a few lines each and their conventions
(bin edges, ties) are stated here rather than inherited.
"""

from __future__ import annotations

import numpy as np
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


def reliability_bins(probs: Tensor, labels: Tensor, bins: int = 15) -> list[dict[str, float]]:
    """Per equal-width confidence bin: its edges, count, accuracy and mean confidence.

    Bin b holds confidences in (b/bins, (b+1)/bins], the first also 0. Empty bins report
    accuracy and confidence 0 with count 0.
    """
    confidence, predicted = probs.detach().cpu().double().max(-1)  # bins are built on the CPU
    correct = (predicted == labels.cpu()).double()
    # ceil maps exactly b/bins into bin b-1, so each bin is closed on the right.
    index = (torch.ceil(confidence * bins) - 1).clamp(0, bins - 1).long()
    count = torch.zeros(bins, dtype=torch.float64).index_add_(0, index, torch.ones_like(correct))
    hits = torch.zeros(bins, dtype=torch.float64).index_add_(0, index, correct)
    conf_sum = torch.zeros(bins, dtype=torch.float64).index_add_(0, index, confidence)
    denominator = count.clamp_min(1.0)
    return [
        {
            "lower": b / bins,
            "upper": (b + 1) / bins,
            "count": int(count[b].item()),
            "accuracy": (hits[b] / denominator[b]).item(),
            "confidence": (conf_sum[b] / denominator[b]).item(),
        }
        for b in range(bins)
    ]


def expected_calibration_error(probs: Tensor, labels: Tensor, bins: int = 15) -> float:
    """ECE with `bins` equal-width confidence bins (Guo et al. 2017):
    sum_b |B_b|/N * |accuracy(B_b) - confidence(B_b)|, bins as in `reliability_bins`."""
    table = reliability_bins(probs, labels, bins)
    total = sum(b["count"] for b in table)
    return sum(b["count"] * abs(b["accuracy"] - b["confidence"]) for b in table) / max(1, total)


def classification_metrics(probs: Tensor, labels: Tensor) -> dict[str, float]:
    return {
        "accuracy": accuracy(probs, labels),
        "nll": negative_log_likelihood(probs, labels),
        "brier": brier_score(probs, labels),
        "ece": expected_calibration_error(probs, labels),
    }


def quantile_threshold(values: Tensor | np.ndarray, quantile: float) -> float:
    """The `quantile` of `values` (linear interpolation), e.g. 0.95 for the OOD threshold."""
    return torch.quantile(torch.as_tensor(values).double(), quantile).item()


def fraction_above(values: Tensor | np.ndarray, threshold: float) -> float:
    """Share of `values` strictly above `threshold`: what an `ood` flag at that threshold marks."""
    return (torch.as_tensor(values).double() > threshold).double().mean().item()


def auroc(scores: Tensor, positive: Tensor) -> float:
    """Area under the ROC curve: P(score of a positive > score of a negative), ties counting 1/2.

    Computed as the Mann-Whitney U statistic with tied scores given their average rank.
    scores (N,) higher = more positive; positive (N,) bool.
    """
    positive = positive.bool()
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("AUROC needs at least one positive and one negative")
    _, inverse, counts = torch.unique(scores.double(), return_inverse=True, return_counts=True)
    last_rank = counts.cumsum(0).double()  # 1-based rank of each distinct score's last member
    average_rank = last_rank - (counts.double() - 1) / 2
    rank_sum = average_rank[inverse][positive].sum().item()
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def average_precision(scores: Tensor, positive: Tensor) -> float:
    """Area under the precision-recall curve as average precision, sum_k (R_k - R_{k-1}) P_k,
    over each distinct score taken as a threshold (tied scores enter together).

    scores (N,) higher = more positive; positive (N,) bool. A random scorer gets the positive rate.
    """
    positive = positive.bool()
    n_pos = int(positive.sum())
    if n_pos == 0:
        raise ValueError("average precision needs at least one positive")
    # Distinct scores in descending order; per distinct score, how many inputs and positives.
    _, inverse, counts = torch.unique(-scores.double(), return_inverse=True, return_counts=True)
    hits = torch.zeros(len(counts), dtype=torch.float64).index_add_(0, inverse, positive.double())
    true_positives = hits.cumsum(0)
    precision = true_positives / counts.cumsum(0).double()
    recall_step = hits / n_pos
    return (recall_step * precision).sum().item()


def selective_accuracy(correct: Tensor, uncertainty: Tensor, abstain: float) -> float:
    """Accuracy on the inputs kept after abstaining on the `abstain` share with most uncertainty.

    correct (N,) bool; uncertainty (N,) higher = less sure. Ties are broken by input order (stable).
    """
    if not 0.0 <= abstain < 1.0:
        raise ValueError("abstain must be in [0, 1)")
    keep = len(correct) - round(abstain * len(correct))
    order = torch.sort(uncertainty.double(), stable=True).indices[:keep]
    return correct[order].double().mean().item()
