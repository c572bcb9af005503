import math

import pytest
import torch

from models.uncertainty import (
    entropy,
    expected_entropy,
    mutual_information,
    predictive_entropy,
    summarize,
    variation_ratio,
)


def test_entropy_of_uniform_and_one_hot():
    assert entropy(torch.full((4,), 0.25)).item() == pytest.approx(math.log(4))
    assert entropy(torch.tensor([1.0, 0.0, 0.0])).item() == 0.0  # 0 log 0 = 0, no NaN


def test_disagreeing_confident_passes_are_all_epistemic():
    # Two passes, one input, two classes: each pass is certain, they disagree.
    probs = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])  # (T=2, B=1, C=2)
    assert predictive_entropy(probs).item() == pytest.approx(math.log(2))
    assert expected_entropy(probs).item() == pytest.approx(0.0)
    assert mutual_information(probs).item() == pytest.approx(math.log(2))
    assert variation_ratio(probs).item() == pytest.approx(0.5)


def test_agreeing_uncertain_passes_are_all_aleatoric():
    probs = torch.tensor([[[0.5, 0.5]], [[0.5, 0.5]], [[0.5, 0.5]]])
    assert predictive_entropy(probs).item() == pytest.approx(math.log(2))
    assert expected_entropy(probs).item() == pytest.approx(math.log(2))
    assert mutual_information(probs).item() == 0.0


def test_hand_computed_mixture():
    # T=2: p1 = (0.9, 0.1), p2 = (0.5, 0.5); mean (0.7, 0.3).
    probs = torch.tensor([[[0.9, 0.1]], [[0.5, 0.5]]], dtype=torch.float64)
    h = lambda p: -sum(x * math.log(x) for x in p)  # noqa: E731
    total = h((0.7, 0.3))
    aleatoric = (h((0.9, 0.1)) + h((0.5, 0.5))) / 2
    summary = summarize(probs)
    assert summary.predictive_entropy.item() == pytest.approx(total)
    assert summary.expected_entropy.item() == pytest.approx(aleatoric)
    assert summary.mutual_information.item() == pytest.approx(total - aleatoric)
    assert summary.std[0].tolist() == pytest.approx([0.2, 0.2])  # population std of (0.9, 0.5)
    assert summary.mean_probabilities[0].tolist() == pytest.approx([0.7, 0.3])
    assert summary.variation_ratio.item() == 0.0  # both passes vote class 0 (argmax of a tie is 0)


def test_mutual_information_is_clamped_at_zero():
    # Identical passes: H[p̄] - mean H[p_t] is 0 up to rounding, and must never come out negative.
    probs = torch.softmax(torch.randn(1, 64, 10), -1).expand(50, -1, -1).contiguous()
    assert (mutual_information(probs) >= 0).all()
    assert (summarize(probs).mutual_information >= 0).all()


def test_variation_ratio_counts_modal_votes():
    # 4 passes vote 0, 0, 1, 2 -> modal class 0 with 2 votes -> 1 - 2/4.
    eye = torch.eye(3)
    probs = torch.stack([eye[0], eye[0], eye[1], eye[2]])[:, None, :]  # (4, 1, 3)
    assert variation_ratio(probs).item() == pytest.approx(0.5)


def test_summary_shapes():
    probs = torch.softmax(torch.randn(7, 5, 10), -1)
    summary = summarize(probs)
    assert summary.mean_probabilities.shape == (5, 10)
    assert summary.std.shape == (5, 10)
    for field in ("predictive_entropy", "expected_entropy", "mutual_information", "variation_ratio"):
        assert getattr(summary, field).shape == (5,)
