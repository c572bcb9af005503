"""Where the coverage guarantee breaks: prediction sets, the OOD flag and abstention on inputs that
are not exchangeable with the calibration data — test digits rotated from 0 to 180 degrees, and the
partner dataset (Fashion-MNIST for MNIST models), whose labels mean nothing to the model."""

from __future__ import annotations

from typing import Any

import numpy as np
from torch import Tensor

from models.calibration import abstains, apply_temperature
from models.conformal import prediction_sets
from models.network import DropoutMLP
from models.uncertainty import UncertaintySummary
from training.calibration import Fitted, level_key
from training.evaluate import mc_summaries
from training.rotation import rotate

SHIFT_ANGLES = tuple(15.0 * step for step in range(13))  # 0, 15, ..., 180 degrees
SHIFT_POPULATION = 2000  # first test digits rotated at every angle (13 x 2000 x T passes)


def _answers(summary: UncertaintySummary, fitted: Fitted, ood_threshold: float | None) -> dict[str, Any]:
    """What the service would answer for each input: sets per level, `ood`, `abstain`."""
    probabilities = apply_temperature(summary.mean_probabilities, fitted.temperature)
    return {
        "probabilities": probabilities,
        "sets": {
            level_key(lv.coverage): prediction_sets(probabilities, lv) for lv in fitted.conformal.levels
        },
        "ood": summary.out_of_distribution(ood_threshold),
        "abstain": abstains(summary, fitted.abstention),
    }


def rotation_shift(
    model: DropoutMLP,
    x_test: Tensor,
    y_test: Tensor,
    fitted: Fitted,
    ood_threshold: float | None,
    samples: int,
    seed: int,
    population: int = SHIFT_POPULATION,
    angles: tuple[float, ...] = SHIFT_ANGLES,
) -> dict[str, Any]:
    """Per angle: accuracy, coverage and mean set size per level, OOD and abstention rates. Every
    angle uses the same masks (seed), so the angles differ by the rotation alone."""
    x, labels = x_test[:population], y_test[:population].numpy(force=True)
    keys = [level_key(lv.coverage) for lv in fitted.conformal.levels]
    table: dict[str, Any] = {
        "angles": list(angles),
        "n": len(labels),
        "samples": samples,
        "accuracy": [],
        "coverage": {key: [] for key in keys},
        "mean_size": {key: [] for key in keys},
        "ood_rate": [],
        "abstain_rate": [],
        "mean_mutual_information": [],
    }
    for angle in angles:
        summary = mc_summaries(model, rotate(x, angle), samples, seed)
        answers = _answers(summary, fitted, ood_threshold)
        table["accuracy"].append(float((answers["probabilities"].argmax(-1) == labels).mean()))
        for key, members in answers["sets"].items():
            table["coverage"][key].append(float(members[np.arange(len(labels)), labels].mean()))
            table["mean_size"][key].append(float(members.sum(1).mean()))
        table["ood_rate"].append(float(answers["ood"].mean()))
        table["abstain_rate"].append(float(answers["abstain"].mean()))
        table["mean_mutual_information"].append(float(summary.mutual_information.mean()))
    return table


def partner_shift(
    summary: UncertaintySummary, dataset: str, fitted: Fitted, ood_threshold: float | None
) -> dict[str, Any]:
    """The partner dataset's test set (MC statistics already computed): set sizes per level, the
    share of confident singletons, OOD and abstention rates. No coverage: its labels are not ours."""
    answers = _answers(summary, fitted, ood_threshold)
    return {
        "dataset": dataset,
        "n": len(summary.mutual_information),
        "mean_size": {key: float(m.sum(1).mean()) for key, m in answers["sets"].items()},
        "singleton_rate": {key: float((m.sum(1) == 1).mean()) for key, m in answers["sets"].items()},
        "ood_rate": float(answers["ood"].mean()),
        "abstain_rate": float(answers["abstain"].mean()),
        "singleton_and_not_flagged": {
            key: float(((m.sum(1) == 1) & ~answers["ood"] & ~answers["abstain"]).mean())
            for key, m in answers["sets"].items()
        },
    }
