"""Uncertainty a user can act on, fitted on validation data and measured on the test set: the
temperature of the MC mean, split-conformal prediction sets, and the abstention policy.

The validation split is cut in two, in order: the first TUNING_SIZE inputs fit the temperature and
tune RAPS's penalty per level, the rest calibrate the conformal quantiles. The quantiles are thus
computed on scores whose function (temperature, penalty) never saw those inputs, which is what the
coverage guarantee needs. The abstention threshold uses the whole validation split.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from models.calibration import abstains, apply_temperature, calibrate_abstention, fit_temperature
from models.conformal import LEVELS, calibrate_level, calibrate_raps, prediction_sets
from models.spec import Abstention, Conformal, ConformalLevel
from models.uncertainty import UncertaintySummary
from training.evaluate import ECE_BINS
from training.metrics import classification_metrics, reliability_bins

TUNING_SIZE = 2000  # first validation inputs: temperature and RAPS penalties; the rest calibrate
TARGET_RISK = 0.005  # abstention: at most 0.5% errors among the inputs answered
ABSTENTION_SCORE = "predictive_entropy"  # kept 92% of the seed model's validation set at 0.5%, MI 87%
RISK_CURVE_POINTS = 100


@dataclass
class Fitted:
    """What the artifact carries beyond the weights, fitted on validation data."""

    temperature: float
    conformal: Conformal
    aps_levels: tuple[ConformalLevel, ...]  # plain APS on the same split, for the card's comparison
    abstention: Abstention


def level_key(coverage: float) -> str:
    """The key of a level in metrics.json: "0.99" for 0.99."""
    return f"{coverage:g}"


def fit(validation: UncertaintySummary, labels: np.ndarray, samples: int, seed: int) -> Fitted:
    """Temperature, conformal levels and abstention policy from the validation statistics (N, ...)
    at `samples` passes (the MC seed `seed`) and their labels (N,)."""
    tuning = min(TUNING_SIZE, len(labels) // 5)
    temperature = fit_temperature(validation.mean_probabilities[:tuning], labels[:tuning])
    probabilities = apply_temperature(validation.mean_probabilities, temperature)
    tuning_split = (probabilities[:tuning], labels[:tuning])
    calibration_split = (probabilities[tuning:], labels[tuning:])
    conformal = Conformal(
        method="raps",
        samples=samples,
        calibration_size=len(labels) - tuning,
        levels=calibrate_raps(tuning_split, calibration_split, LEVELS),
        provenance={
            "split": "validation",
            "tuning_rows": [0, tuning],
            "calibration_rows": [tuning, len(labels)],
            "mc_seed": seed,
            "scores": "temperature-scaled MC mean (calibration.temperature)",
        },
    )
    aps = tuple(calibrate_level(*calibration_split, coverage) for coverage in LEVELS)
    abstention = calibrate_abstention(validation, labels, TARGET_RISK, samples, ABSTENTION_SCORE)
    return Fitted(temperature, conformal, aps, abstention)


def set_statistics(members: np.ndarray, labels: np.ndarray | None) -> dict[str, Any]:
    """Coverage (with its standard error) when labels are known, and the sets' sizes."""
    sizes = members.sum(1)
    result: dict[str, Any] = {
        "mean_size": float(sizes.mean()),
        "singleton_rate": float((sizes == 1).mean()),
        "empty_rate": float((sizes == 0).mean()),
        "size_counts": np.bincount(sizes, minlength=members.shape[1] + 1)[1:].tolist(),  # sizes 1..C
    }
    if labels is not None:
        covered = members[np.arange(len(labels)), labels]
        coverage = float(covered.mean())
        result["coverage"] = coverage
        result["standard_error"] = float(np.sqrt(coverage * (1 - coverage) / len(labels)))
    return result


def risk_coverage_curve(
    scores: dict[str, np.ndarray], correct: np.ndarray, points: int = RISK_CURVE_POINTS
) -> dict[str, Any]:
    """Selective risk (error among the accepted) when accepting the most certain share, for each
    score (higher = less sure), at `points` shares from 1/points to 1."""
    shares = np.arange(1, points + 1) / points
    counts = np.maximum(1, np.round(shares * len(correct)).astype(int))
    curve: dict[str, Any] = {"coverage": shares.tolist(), "risk": {}}
    for name, score in scores.items():
        errors = np.cumsum(~correct[np.argsort(score, kind="stable")])
        curve["risk"][name] = (errors[counts - 1] / counts).tolist()
    return curve


def measure_on_test(
    summary: UncertaintySummary, labels: np.ndarray, fitted: Fitted, class_names: list[str]
) -> dict[str, Any]:
    """The calibration, conformal and abstention sections of metrics.json: test-set figures of the
    fitted parts (summary at the fitted number of passes, labels (N,))."""
    probabilities = apply_temperature(summary.mean_probabilities, fitted.temperature)
    before, after = torch.from_numpy(summary.mean_probabilities), torch.from_numpy(probabilities)
    targets = torch.from_numpy(labels)
    n = len(labels)
    levels = []
    by_class: dict[str, Any] = {
        "classes": class_names,
        "n": np.bincount(labels, minlength=len(class_names)).tolist(),
    }
    by_class["coverage"], by_class["mean_size"] = {}, {}
    for level, aps in zip(fitted.conformal.levels, fitted.aps_levels, strict=True):
        members = prediction_sets(probabilities, level)
        covered = members[np.arange(n), labels]
        key = level_key(level.coverage)
        by_class["coverage"][key] = [float(covered[labels == c].mean()) for c in range(len(class_names))]
        by_class["mean_size"][key] = [
            float(members[labels == c].sum(1).mean()) for c in range(len(class_names))
        ]
        levels.append(
            {
                **asdict(level),
                "bound": min(1.0, level.coverage + 1 / (fitted.conformal.calibration_size + 1)),
                "test": set_statistics(members, labels),
                "aps": {
                    "quantile": aps.quantile,
                    "test": set_statistics(prediction_sets(probabilities, aps), labels),
                },
            }
        )
    correct = probabilities.argmax(-1) == labels
    policy = fitted.abstention
    refused = abstains(summary, policy)
    accepted = ~refused
    return {
        "calibration": {
            "temperature": fitted.temperature,
            "applied_to": "MC mean: softmax(log p̄ / temperature)",
            "fitted_on": f"validation rows {fitted.conformal.provenance['tuning_rows']}, mean NLL",
            "test": {
                "before": classification_metrics(before, targets),
                "after": classification_metrics(after, targets),
            },
            "reliability": reliability_bins(after, targets, ECE_BINS),
        },
        "conformal": {
            **{k: v for k, v in fitted.conformal.to_dict().items() if k != "levels"},
            "test_n": n,
            "levels": levels,
            "by_class": by_class,
        },
        "abstention": {
            "policy": policy.to_dict(),
            "test": {
                "accepted": float(accepted.mean()),
                "risk": float((~correct[accepted]).mean()) if accepted.any() else 0.0,
            },
            "curve": risk_coverage_curve(
                {
                    "predictive_entropy": summary.predictive_entropy,
                    "mutual_information": summary.mutual_information,
                    "max_probability": -probabilities.max(-1),
                },
                correct,
            ),
        },
    }
