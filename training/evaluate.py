"""Test-set evaluation of a trained network: the deterministic net and the MC-dropout mean side by
side, MC convergence in T, reliability, selective prediction; and the OOD threshold calibration."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from models.mc_dropout import MaskSource, mc_dropout_logits, predict_logits
from models.network import DropoutMLP
from models.uncertainty import UncertaintySummary, entropy, summarize_logits
from training.metrics import (
    classification_metrics,
    quantile_threshold,
    reliability_bins,
    selective_accuracy,
)

EVAL_BATCH = 1000
MC_GRID = (1, 10, 30, 100, 300)  # numbers of passes reported, so convergence in T is visible
ABSTAIN = (0.0, 0.05, 0.10, 0.20)  # selective prediction: share of most-uncertain inputs set aside
ECE_BINS = 15


def predict_deterministic(model: DropoutMLP, x: Tensor) -> Tensor:
    """(N, 784) -> (N, C) eval-mode probabilities, on the CPU whatever the model's device: the metrics
    meet them there with the MC statistics (the compiled last layer's passes are computed there)."""
    batches = [predict_logits(model, x[i : i + EVAL_BATCH]) for i in range(0, len(x), EVAL_BATCH)]
    return torch.softmax(torch.cat(batches), dim=-1).cpu()


def summarize_passes(logits: Tensor) -> UncertaintySummary:
    """The statistics (models.uncertainty, the service's own) of (T, B, C) MC logits."""
    return summarize_logits(logits.numpy(force=True))[0]


def mc_summaries(model: DropoutMLP, x: Tensor, samples: int, seed: int) -> UncertaintySummary:
    """MC-dropout summaries for every input, batched; one mask source for the whole set."""
    masks = MaskSource(seed)
    return UncertaintySummary.concatenate(
        [
            summarize_passes(mc_dropout_logits(model, x[i : i + EVAL_BATCH], samples, masks))
            for i in range(0, len(x), EVAL_BATCH)
        ]
    )


@dataclass
class TestEvaluation:
    metrics: dict[str, Any]  # the "test" section of metrics.json
    deterministic: Tensor  # (N, C) eval-mode probabilities
    summary: UncertaintySummary  # MC statistics at the primary number of passes


def evaluate(
    model: DropoutMLP,
    x: Tensor,
    y: Tensor,
    samples: int = 100,
    seed: int = 0,
    grid: tuple[int, ...] = MC_GRID,
) -> TestEvaluation:
    """Deterministic and MC-mean metrics; MC at every T in `grid` plus `samples` (the primary T).

    The largest T is sampled once per batch and every smaller T is its first passes, so the whole
    grid costs max(T) passes, not their sum; the primary T's statistics feed OOD and selection.
    """
    y = y.cpu()  # beside the probabilities: MC logits come back on the CPU
    counts = sorted({*grid, samples})
    masks = MaskSource(seed)
    means: dict[int, list[Tensor]] = {t: [] for t in counts}
    aleatoric: dict[int, list[np.ndarray]] = {t: [] for t in counts}
    parts = []
    for i in range(0, len(x), EVAL_BATCH):
        logits = mc_dropout_logits(model, x[i : i + EVAL_BATCH], counts[-1], masks)  # (T, B, C)
        probs = torch.softmax(logits, dim=-1)
        running_probs = probs.cumsum(0)  # (T, B, C)
        running_entropy = entropy(probs.cpu().double().numpy()).cumsum(0)  # (T, B)
        for t in counts:
            means[t].append(running_probs[t - 1] / t)
            aleatoric[t].append(running_entropy[t - 1] / t)
        parts.append(summarize_passes(logits[:samples]))
    summary = UncertaintySummary.concatenate(parts)
    deterministic = predict_deterministic(model, x)

    metrics: dict[str, Any] = {
        "n": len(y),
        "mc_samples": samples,
        "mc_grid": counts,
        "deterministic": classification_metrics(deterministic, y),
    }
    for t in counts:
        mean = torch.cat(means[t])  # (N, C)
        total = entropy(mean.cpu().double().numpy())
        mc = classification_metrics(mean, y)
        mc["mean_predictive_entropy"] = float(total.mean())
        mc["mean_mutual_information"] = float(np.maximum(total - np.concatenate(aleatoric[t]), 0.0).mean())
        metrics[f"mc_t{t}"] = mc
    metrics["reliability"] = {
        "bins": ECE_BINS,
        "deterministic": reliability_bins(deterministic, y, ECE_BINS),
        "mc": reliability_bins(torch.from_numpy(summary.mean_probabilities), y, ECE_BINS),
    }
    metrics["selective"] = selective_prediction(deterministic, summary, y)
    return TestEvaluation(metrics=metrics, deterministic=deterministic, summary=summary)


def selective_prediction(
    deterministic: Tensor,
    summary: UncertaintySummary,
    y: Tensor,
    abstain: tuple[float, ...] = ABSTAIN,
) -> dict[str, list[float]]:
    """Accuracy on what is kept after abstaining on the most uncertain share, per ranking."""
    mean = torch.from_numpy(summary.mean_probabilities)
    det_correct = deterministic.argmax(-1) == y
    mc_correct = mean.argmax(-1) == y
    rankings = {
        "deterministic_max_probability": (det_correct, -deterministic.max(-1).values),
        "mc_max_probability": (mc_correct, -mean.max(-1).values),
        "mc_predictive_entropy": (mc_correct, torch.from_numpy(summary.predictive_entropy)),
        "mc_mutual_information": (mc_correct, torch.from_numpy(summary.mutual_information)),
    }
    table: dict[str, list[float]] = {"abstain": list(abstain)}
    for name, (correct, uncertainty) in rankings.items():
        table[name] = [selective_accuracy(correct, uncertainty, share) for share in abstain]
    return table


def calibrate_ood_threshold(
    model: DropoutMLP, x_val: Tensor, samples: int = 100, quantile: float = 0.95, seed: int = 0
) -> float:
    """Mutual information at the `quantile` of the validation set: above it, an input is flagged OOD."""
    return ood_threshold(mc_summaries(model, x_val, samples, seed), quantile)


def ood_threshold(validation: UncertaintySummary, quantile: float = 0.95) -> float:
    """The OOD threshold from validation statistics already computed: their mutual information's
    `quantile`."""
    return quantile_threshold(torch.from_numpy(validation.mutual_information), quantile)
