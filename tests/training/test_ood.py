"""OOD detection metrics and the calibrated threshold's flag rates on hand-made summaries."""

from __future__ import annotations

import pytest
import torch

from models.uncertainty import summarize_logits
from training.ood import OOD_PARTNER, detection_metrics, histogram, ood_evaluation


def test_detection_of_perfectly_separated_scores():
    result = detection_metrics(torch.tensor([0.1, 0.2, 0.3]), torch.tensor([0.5, 0.6]))
    assert result == {"auroc": 1.0, "aupr_out": 1.0, "aupr_in": 1.0}


def test_detection_of_reversed_scores():
    result = detection_metrics(torch.tensor([0.9, 0.8]), torch.tensor([0.1, 0.2]))
    assert result["auroc"] == 0.0
    assert result["aupr_out"] == pytest.approx(0.5 * 1 / 3 + 0.5 * 2 / 4)  # positives found last


def test_each_dataset_is_the_other_ones_ood_set():
    assert OOD_PARTNER == {"mnist": "fashion-mnist", "fashion-mnist": "mnist"}


def test_histogram_shares_bins_across_sides():
    result = histogram(torch.tensor([0.0, 0.1, 0.1]), torch.tensor([1.0]), bins=2)
    assert result["edges"] == [0.0, 0.5, 1.0]
    assert result["in"] == [3.0, 0.0] and result["out"] == [0.0, 1.0]


def test_ood_evaluation_scores_and_threshold_flags():
    # In distribution: every pass agrees and is sure. Out: passes disagree, so MI is high.
    sure = torch.tensor([[0.98, 0.01, 0.01]]).expand(4, 5, 3)  # (T, B, C)
    split = torch.tensor([[[0.9, 0.05, 0.05]], [[0.05, 0.9, 0.05]]]).repeat(2, 3, 1)  # (4, 3, 3)
    inside, outside = summarize_logits(sure.log().numpy())[0], summarize_logits(split.log().numpy())[0]
    in_probs, out_probs = (
        torch.from_numpy(inside.mean_probabilities),
        torch.from_numpy(outside.mean_probabilities),
    )
    result = ood_evaluation(inside, in_probs, outside, out_probs, 0.1)
    assert result["n_in"] == 5 and result["n_out"] == 3
    for name in ("max_probability", "predictive_entropy", "mutual_information"):
        assert result["scores"][name]["auroc"] == 1.0
    assert result["threshold"] == {"mutual_information": 0.1, "flagged_in": 0.0, "flagged_out": 1.0}
    assert "threshold" not in ood_evaluation(inside, in_probs, outside, out_probs, None)
