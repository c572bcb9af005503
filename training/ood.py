"""Out-of-distribution detection: how well an uncertainty score separates in- from out-of-
distribution test inputs (MNIST vs Fashion-MNIST and back), threshold-free and at the artifact's
calibrated mutual-information threshold."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from models.uncertainty import UncertaintySummary
from training.metrics import auroc, average_precision, fraction_above

# The out-of-distribution set of each dataset's models.
OOD_PARTNER = {"mnist": "fashion-mnist", "fashion-mnist": "mnist"}


def ood_scores(summary: UncertaintySummary, deterministic_probs: Tensor) -> dict[str, Tensor]:
    """Per-input scores, higher = more likely out of distribution. (B,) each."""
    return {
        "max_probability": -torch.from_numpy(summary.mean_probabilities.max(-1)),  # MC mean, negated
        "max_probability_deterministic": -deterministic_probs.max(-1).values,  # Hendrycks & Gimpel
        "predictive_entropy": torch.from_numpy(summary.predictive_entropy),
        "mutual_information": torch.from_numpy(summary.mutual_information),
    }


def detection_metrics(in_scores: Tensor, out_scores: Tensor) -> dict[str, float]:
    """AUROC, and AUPR with either side as the positive class (Hendrycks & Gimpel 2017)."""
    scores = torch.cat([in_scores, out_scores]).detach().cpu().double()  # ranking runs on the CPU
    is_out = torch.cat([torch.zeros(len(in_scores)), torch.ones(len(out_scores))]).bool()
    return {
        "auroc": auroc(scores, is_out),
        "aupr_out": average_precision(scores, is_out),
        "aupr_in": average_precision(-scores, ~is_out),
    }


def histogram(in_values: Tensor, out_values: Tensor, bins: int = 40) -> dict[str, list[float]]:
    """Shared equal-width bins from 0 to the largest value; counts per side."""
    top = max(in_values.max().item(), out_values.max().item(), 1e-6)
    edges = torch.linspace(0.0, top, bins + 1, dtype=torch.float64)
    return {
        "edges": edges.tolist(),
        "in": torch.histc(in_values.double(), bins, 0.0, top).tolist(),
        "out": torch.histc(out_values.double(), bins, 0.0, top).tolist(),
    }


def ood_evaluation(
    in_summary: UncertaintySummary,
    in_deterministic: Tensor,
    out_summary: UncertaintySummary,
    out_deterministic: Tensor,
    threshold: float | None,
) -> dict[str, Any]:
    """Every score's detection metrics, the threshold's flag rates, and histograms for the card."""
    inside = ood_scores(in_summary, in_deterministic)
    outside = ood_scores(out_summary, out_deterministic)
    result: dict[str, Any] = {
        "n_in": len(in_deterministic),
        "n_out": len(out_deterministic),
        "scores": {name: detection_metrics(inside[name], outside[name]) for name in inside},
        "histograms": {
            name: histogram(inside[name], outside[name])
            for name in ("predictive_entropy", "mutual_information")
        },
    }
    if threshold is not None:
        result["threshold"] = {
            "mutual_information": threshold,
            "flagged_in": fraction_above(inside["mutual_information"], threshold),
            "flagged_out": fraction_above(outside["mutual_information"], threshold),
        }
    return result
