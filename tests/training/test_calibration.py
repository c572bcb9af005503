"""The training-time fit of temperature, conformal levels and abstention, and its test-set evidence."""

from __future__ import annotations

import numpy as np
import pytest

from models.conformal import LEVELS
from models.uncertainty import UncertaintySummary, summarize_logits
from training.calibration import TUNING_SIZE, fit, measure_on_test, risk_coverage_curve


def statistics(rng: np.random.Generator, n: int) -> tuple[UncertaintySummary, np.ndarray]:
    """MC statistics of 8 noisy passes around per-input logits, labels drawn from the softmax of
    those logits: validation and test splits from one distribution are exchangeable."""
    centre = rng.normal(0, 2.5, (n, 10))
    passes = (centre + rng.normal(0, 1.0, (8, n, 10))).astype(np.float32)
    truth = np.exp(centre) / np.exp(centre).sum(1, keepdims=True)
    labels = (truth.cumsum(1) > rng.random((n, 1))).argmax(1)
    return summarize_logits(passes)[0], labels


@pytest.fixture(scope="module")
def fitted_and_evidence():
    rng = np.random.default_rng(0)
    validation, y_val = statistics(rng, 10_000)
    test, y_test = statistics(rng, 10_000)
    fitted = fit(validation, y_val, samples=8, seed=3)
    return fitted, measure_on_test(test, y_test, fitted, [str(c) for c in range(10)])


def test_fit_splits_validation_into_tuning_and_calibration(fitted_and_evidence):
    fitted, _ = fitted_and_evidence
    conformal = fitted.conformal
    assert conformal.method == "raps" and conformal.samples == 8
    assert conformal.provenance["tuning_rows"] == [0, TUNING_SIZE]
    assert conformal.provenance["calibration_rows"] == [TUNING_SIZE, 10_000]
    assert conformal.calibration_size == 10_000 - TUNING_SIZE
    assert [level.coverage for level in conformal.levels] == list(LEVELS)
    assert [level.coverage for level in fitted.aps_levels] == list(LEVELS)
    assert all(level.penalty == 0 for level in fitted.aps_levels)
    assert fitted.temperature > 0 and fitted.abstention.score == "predictive_entropy"


def test_evidence_covers_every_level_and_reports_calibration(fitted_and_evidence):
    _, evidence = fitted_and_evidence
    for level in evidence["conformal"]["levels"]:
        test = level["test"]
        assert test["coverage"] >= level["coverage"] - 3 * test["standard_error"] - 0.005
        assert test["empty_rate"] == 0.0 and sum(test["size_counts"]) == 10_000
        assert level["aps"]["test"]["empty_rate"] == 0.0
    by_class = evidence["conformal"]["by_class"]
    assert sum(by_class["n"]) == 10_000 and len(by_class["coverage"]["0.99"]) == 10
    calibration = evidence["calibration"]
    assert set(calibration["test"]) == {"before", "after"}
    assert calibration["test"]["after"]["nll"] <= calibration["test"]["before"]["nll"] + 0.01
    abstention = evidence["abstention"]
    assert 0 < abstention["test"]["accepted"] <= 1
    assert set(abstention["curve"]["risk"]) == {"predictive_entropy", "mutual_information", "max_probability"}


def test_risk_coverage_curve():
    correct = np.array([True, True, True, False])
    curve = risk_coverage_curve({"good": np.array([0.1, 0.2, 0.3, 0.9])}, correct, points=4)
    assert curve["coverage"] == [0.25, 0.5, 0.75, 1.0]
    assert curve["risk"]["good"] == [0.0, 0.0, 0.0, 0.25]
