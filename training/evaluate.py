"""Evaluation of a trained network: deterministic and MC-mean metrics, OOD calibration."""

from __future__ import annotations

import torch
from torch import Tensor

from models.mc_dropout import deterministic_probabilities, generator_for, mc_dropout_probabilities
from models.network import DropoutMLP
from models.uncertainty import UncertaintySummary, summarize
from training.metrics import classification_metrics

EVAL_BATCH = 1000


def predict_deterministic(model: DropoutMLP, x: Tensor) -> Tensor:
    """(N, 784) -> (N, C) eval-mode probabilities."""
    return torch.cat(
        [deterministic_probabilities(model, x[i : i + EVAL_BATCH]) for i in range(0, len(x), EVAL_BATCH)]
    )


def mc_summaries(model: DropoutMLP, x: Tensor, samples: int, seed: int) -> UncertaintySummary:
    """MC-dropout summaries for every input, batched; one generator for the whole set."""
    generator = generator_for(seed, x.device)
    parts = [
        summarize(mc_dropout_probabilities(model, x[i : i + EVAL_BATCH], samples, generator))
        for i in range(0, len(x), EVAL_BATCH)
    ]
    return UncertaintySummary(
        **{
            name: torch.cat([getattr(p, name) for p in parts])
            for name in UncertaintySummary.__dataclass_fields__
        }
    )


def evaluate(model: DropoutMLP, x: Tensor, y: Tensor, samples: int = 100, seed: int = 0) -> dict[str, object]:
    """Test-set metrics of the deterministic net and of the MC mean side by side."""
    deterministic = classification_metrics(predict_deterministic(model, x), y)
    summary = mc_summaries(model, x, samples, seed)
    mc = classification_metrics(summary.mean_probabilities, y)
    mc["mean_mutual_information"] = summary.mutual_information.mean().item()
    mc["mean_predictive_entropy"] = summary.predictive_entropy.mean().item()
    return {"deterministic": deterministic, f"mc_t{samples}": mc, "mc_samples": samples, "n": len(y)}


def calibrate_ood_threshold(
    model: DropoutMLP, x_val: Tensor, samples: int = 100, quantile: float = 0.95, seed: int = 0
) -> float:
    """Mutual information at the `quantile` of the validation set: above it, an input is flagged OOD."""
    mutual_information = mc_summaries(model, x_val, samples, seed).mutual_information
    return torch.quantile(mutual_information.double(), quantile).item()
