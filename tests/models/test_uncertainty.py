import math

import numpy as np
import pytest

from models.uncertainty import PassStatistics, entropy, summarize_logits
from tests.models.reference import reference_statistics


def logits_of(probs: list) -> np.ndarray:
    """Passes given as probabilities (T, B, C) -> logits whose softmax they are."""
    return np.log(np.asarray(probs, dtype=np.float64)).astype(np.float32)


def test_entropy_of_uniform_and_one_hot():
    assert entropy(np.full(4, 0.25)) == pytest.approx(math.log(4))
    assert entropy(np.array([1.0, 0.0, 0.0])) == 0.0  # 0 log 0 = 0, no NaN


def test_disagreeing_confident_passes_are_all_epistemic():
    logits = np.array([[[30.0, -30.0]], [[-30.0, 30.0]]], dtype=np.float32)  # each pass sure; they disagree
    summary, _ = summarize_logits(logits)
    assert summary.predictive_entropy.item() == pytest.approx(math.log(2))
    assert summary.expected_entropy.item() == pytest.approx(0.0, abs=1e-20)
    assert summary.mutual_information.item() == pytest.approx(math.log(2))
    assert summary.variation_ratio.item() == pytest.approx(0.5)


def test_agreeing_uncertain_passes_are_all_aleatoric():
    summary, _ = summarize_logits(np.zeros((3, 1, 2), dtype=np.float32))
    assert summary.predictive_entropy.item() == pytest.approx(math.log(2))
    assert summary.expected_entropy.item() == pytest.approx(math.log(2))
    assert summary.mutual_information.item() == 0.0
    assert summary.variation_ratio.item() == 0.0


def test_hand_computed_mixture():
    # T=2: p1 = (0.9, 0.1), p2 = (0.5, 0.5); mean (0.7, 0.3).
    summary, probs = summarize_logits(logits_of([[[0.9, 0.1]], [[0.5, 0.5]]]))
    h = lambda p: -sum(x * math.log(x) for x in p)  # noqa: E731
    np.testing.assert_allclose(probs[:, 0], [[0.9, 0.1], [0.5, 0.5]], rtol=1e-6)
    assert summary.predictive_entropy.item() == pytest.approx(h((0.7, 0.3)))
    assert summary.expected_entropy.item() == pytest.approx((h((0.9, 0.1)) + h((0.5, 0.5))) / 2)
    assert summary.std[0].tolist() == pytest.approx([0.2, 0.2])  # population std of (0.9, 0.5)


def test_ties_vote_for_the_first_class_as_argmax_does():
    summary, _ = summarize_logits(np.zeros((4, 1, 3), dtype=np.float32))
    assert summary.variation_ratio.item() == 0.0  # all four passes vote for class 0


@pytest.mark.parametrize("shape", [(1, 1, 2), (100, 1, 10), (37, 5, 10), (300, 3, 4)])
def test_statistics_equal_the_per_element_reference(shape):
    logits = np.random.default_rng(sum(shape)).normal(scale=3.0, size=shape).astype(np.float32)
    summary, probs = summarize_logits(logits)
    z = logits.astype(np.float64)
    expected_probs = np.exp(z - z.max(-1, keepdims=True))
    expected_probs /= expected_probs.sum(-1, keepdims=True)
    np.testing.assert_allclose(probs, expected_probs, rtol=1e-12)
    expected = reference_statistics(expected_probs)
    np.testing.assert_allclose(summary.mean_probabilities, expected["mean"], rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(summary.std, expected["std"], rtol=1e-9, atol=1e-15)
    np.testing.assert_allclose(summary.predictive_entropy, expected["total"], rtol=1e-12)
    np.testing.assert_allclose(summary.expected_entropy, expected["aleatoric"], rtol=1e-9)
    np.testing.assert_allclose(summary.mutual_information, expected["mi"], rtol=1e-7, atol=1e-12)
    np.testing.assert_array_equal(summary.variation_ratio, expected["vr"])


def test_chunks_merge_to_the_statistics_of_all_passes():
    logits = np.random.default_rng(0).normal(scale=2.0, size=(250, 4, 10)).astype(np.float32)
    statistics = PassStatistics(4, 10)
    for first in range(0, 250, 64):
        statistics.add(logits[first : first + 64])
    merged, (whole, _) = statistics.summary(), summarize_logits(logits)
    for name in whole.__dataclass_fields__:
        np.testing.assert_allclose(getattr(merged, name), getattr(whole, name), rtol=1e-12, atol=1e-15)


def test_an_input_s_statistics_do_not_depend_on_the_inputs_beside_it():
    logits = np.random.default_rng(2).normal(scale=3.0, size=(100, 7, 10)).astype(np.float32)
    together, _ = summarize_logits(logits)
    for b in range(7):
        alone, _ = summarize_logits(logits[:, b : b + 1])
        for name in alone.__dataclass_fields__:
            assert getattr(alone, name).tobytes() == getattr(together, name)[b : b + 1].tobytes()


def test_bounds_hold_for_random_passes():
    logits = np.random.default_rng(1).normal(scale=4.0, size=(50, 200, 10)).astype(np.float32)
    summary, _ = summarize_logits(logits)
    assert np.allclose(summary.mean_probabilities.sum(-1), 1.0)
    assert (summary.mutual_information >= 0).all()
    assert (summary.mutual_information <= summary.predictive_entropy + 1e-12).all()
    assert (summary.predictive_entropy <= math.log(10) + 1e-12).all()
    assert ((summary.variation_ratio >= 0) & (summary.variation_ratio < 1)).all()


def test_large_logits_stay_finite():
    summary, probs = summarize_logits(np.array([[[1000.0, 0.0, -1000.0]]], dtype=np.float32))
    assert np.isfinite(probs).all() and probs[0, 0, 0] == pytest.approx(1.0)
    assert np.isfinite(summary.predictive_entropy).all()


def test_mismatched_buffers_are_refused():
    with pytest.raises(ValueError):
        PassStatistics(2, 10).add(np.zeros((5, 3, 10), dtype=np.float32))
