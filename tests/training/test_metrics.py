"""ECE, AUROC, average precision, selective accuracy and the threshold on hand-made inputs."""

from __future__ import annotations

import pytest
import torch

from training.metrics import (
    auroc,
    average_precision,
    expected_calibration_error,
    fraction_above,
    quantile_threshold,
    reliability_bins,
    selective_accuracy,
)


def two_class(confidences: list[float]) -> torch.Tensor:
    """Probabilities (N, 2) predicting class 0 with each confidence."""
    c = torch.tensor(confidences, dtype=torch.float64)
    return torch.stack([c, 1 - c], dim=1)


def test_ece_is_the_count_weighted_gap_between_accuracy_and_confidence():
    # Bin of 0.9: one right, one wrong -> |0.5 - 0.9| = 0.4; bin of 0.6: one right, one wrong -> 0.1.
    probs = two_class([0.9, 0.9, 0.6, 0.6])
    labels = torch.tensor([0, 1, 0, 1])
    assert expected_calibration_error(probs, labels) == pytest.approx((2 * 0.4 + 2 * 0.1) / 4)


def test_ece_is_zero_when_confidence_matches_accuracy():
    probs = two_class([0.7] * 10)
    labels = torch.tensor([0] * 7 + [1] * 3)
    assert expected_calibration_error(probs, labels) == pytest.approx(0.0, abs=1e-12)


def test_ece_of_a_confident_wrong_model_is_its_confidence():
    probs = two_class([1.0, 1.0])
    assert expected_calibration_error(probs, torch.tensor([1, 1])) == pytest.approx(1.0)


def test_bins_are_closed_on_the_right():
    # With 4 bins, confidence 0.75 belongs to (0.5, 0.75], 0.5 to (0.25, 0.5], 1.0 to (0.75, 1].
    table = reliability_bins(two_class([0.5, 0.75, 1.0]), torch.tensor([0, 0, 1]), bins=4)
    assert [b["count"] for b in table] == [0, 1, 1, 1]
    assert table[3] == {"lower": 0.75, "upper": 1.0, "count": 1, "accuracy": 0.0, "confidence": 1.0}
    assert table[2]["confidence"] == pytest.approx(0.75) and table[2]["accuracy"] == 1.0


def test_auroc_counts_correctly_ordered_pairs():
    scores = torch.tensor([0.1, 0.4, 0.35, 0.8])
    positive = torch.tensor([0, 0, 1, 1]).bool()
    assert auroc(scores, positive) == pytest.approx(0.75)  # 3 of the 4 (pos, neg) pairs in order


def test_auroc_counts_ties_as_half():
    scores = torch.tensor([0.2, 0.5, 0.5, 0.9])
    positive = torch.tensor([0, 1, 0, 1]).bool()
    assert auroc(scores, positive) == pytest.approx((1 + 0.5 + 1 + 1) / 4)
    assert auroc(torch.ones(4), positive) == pytest.approx(0.5)


def test_auroc_extremes_and_refusal():
    positive = torch.tensor([0, 0, 1, 1]).bool()
    assert auroc(torch.tensor([1.0, 2.0, 3.0, 4.0]), positive) == 1.0
    assert auroc(torch.tensor([4.0, 3.0, 2.0, 1.0]), positive) == 0.0
    with pytest.raises(ValueError, match="positive and one negative"):
        auroc(torch.tensor([1.0, 2.0]), torch.tensor([True, True]))


def test_average_precision_known_answers():
    positive = torch.tensor([0, 0, 1, 1]).bool()
    # Ranked 0.8 (pos), 0.4 (neg), 0.35 (pos): precision 1 at recall 1/2, 2/3 at recall 1.
    assert average_precision(torch.tensor([0.1, 0.4, 0.35, 0.8]), positive) == pytest.approx(
        0.5 + 0.5 * 2 / 3
    )
    assert average_precision(torch.tensor([1.0, 2.0, 3.0, 4.0]), positive) == pytest.approx(1.0)
    # All tied: one threshold, precision = positive rate.
    assert average_precision(torch.ones(4), positive) == pytest.approx(0.5)
    # Tied pair entering together: recall 1/2 at precision 1, then recall 1 at precision 2/3.
    tied = torch.tensor([0.2, 0.5, 0.5, 0.9])
    assert average_precision(tied, torch.tensor([0, 1, 0, 1]).bool()) == pytest.approx(0.5 + 0.5 * 2 / 3)


def test_selective_accuracy_drops_the_most_uncertain():
    correct = torch.tensor([True, False, True, True])
    uncertainty = torch.tensor([0.1, 0.9, 0.2, 0.3])
    assert selective_accuracy(correct, uncertainty, 0.0) == 0.75
    assert selective_accuracy(correct, uncertainty, 0.25) == 1.0
    assert selective_accuracy(correct, uncertainty, 0.5) == 1.0


def test_selective_accuracy_breaks_ties_by_input_order():
    correct = torch.tensor([False, True, True, True])
    assert selective_accuracy(correct, torch.zeros(4), 0.25) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="abstain"):
        selective_accuracy(correct, torch.zeros(4), 1.0)


def test_threshold_at_the_95th_percentile_flags_5_percent():
    values = torch.arange(101, dtype=torch.float64)  # 0, 1, ..., 100
    threshold = quantile_threshold(values, 0.95)
    assert threshold == pytest.approx(95.0)
    assert fraction_above(values, threshold) == pytest.approx(5 / 101)
    assert quantile_threshold(torch.tensor([0.0, 1.0]), 0.95) == pytest.approx(0.95)  # interpolated
