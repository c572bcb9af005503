import math

import numpy as np
import pytest
import torch

from models.uncertainty import (
    entropy,
    expected_entropy,
    mutual_information,
    predictive_entropy,
    summarize,
    summarize_logits,
    summarize_tensor,
    variation_ratio,
)


def test_entropy_of_uniform_and_one_hot():
    assert entropy(np.full(4, 0.25)) == pytest.approx(math.log(4))
    assert entropy(np.array([1.0, 0.0, 0.0])) == 0.0  # 0 log 0 = 0, no NaN


def test_disagreeing_confident_passes_are_all_epistemic():
    # Two passes, one input, two classes: each pass is certain, they disagree.
    probs = np.array([[[1.0, 0.0]], [[0.0, 1.0]]])  # (T=2, B=1, C=2)
    assert predictive_entropy(probs).item() == pytest.approx(math.log(2))
    assert expected_entropy(probs).item() == pytest.approx(0.0)
    assert mutual_information(probs).item() == pytest.approx(math.log(2))
    assert variation_ratio(probs).item() == pytest.approx(0.5)


def test_agreeing_uncertain_passes_are_all_aleatoric():
    probs = np.array([[[0.5, 0.5]], [[0.5, 0.5]], [[0.5, 0.5]]])
    assert predictive_entropy(probs).item() == pytest.approx(math.log(2))
    assert expected_entropy(probs).item() == pytest.approx(math.log(2))
    assert mutual_information(probs).item() == 0.0


def test_hand_computed_mixture():
    # T=2: p1 = (0.9, 0.1), p2 = (0.5, 0.5); mean (0.7, 0.3).
    probs = np.array([[[0.9, 0.1]], [[0.5, 0.5]]])
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
    probs = torch.softmax(torch.randn(1, 64, 10), -1).numpy().repeat(50, axis=0)
    assert (mutual_information(probs) >= 0).all()
    assert (summarize(probs).mutual_information >= 0).all()


def test_variation_ratio_counts_modal_votes():
    # 4 passes vote 0, 0, 1, 2 -> modal class 0 with 2 votes -> 1 - 2/4.
    eye = np.eye(3)
    probs = np.stack([eye[0], eye[0], eye[1], eye[2]])[:, None, :]  # (4, 1, 3)
    assert variation_ratio(probs).item() == pytest.approx(0.5)


def test_summary_shapes_and_rows():
    probs = torch.softmax(torch.randn(7, 5, 10), -1).numpy()
    summary = summarize(probs)
    assert summary.mean_probabilities.shape == (5, 10)
    assert summary.std.shape == (5, 10)
    for field in ("predictive_entropy", "expected_entropy", "mutual_information", "variation_ratio"):
        assert getattr(summary, field).shape == (5,)
    assert np.array_equal(summary.rows(slice(1, 3)).std, summary.std[1:3])


def test_each_row_is_summarized_the_same_whatever_shares_its_batch():
    probs = torch.softmax(torch.randn(100, 50, 10, generator=torch.Generator().manual_seed(3)), -1).numpy()
    whole = summarize(probs)
    for rows in (slice(0, 1), slice(17, 19), slice(49, 50)):
        alone = summarize(probs[:, rows])
        for name in ("mean_probabilities", "std", "predictive_entropy", "mutual_information"):
            assert np.array_equal(getattr(alone, name), getattr(whole, name)[rows]), name


def test_summarize_tensor_gives_the_same_statistics_as_tensors():
    probs = torch.softmax(torch.randn(20, 4, 10, generator=torch.Generator().manual_seed(4)), -1)
    as_tensors = summarize_tensor(probs)
    as_arrays = summarize(probs.numpy())
    assert as_tensors.mutual_information.dtype == torch.float32
    assert np.allclose(as_tensors.mutual_information.numpy(), as_arrays.mutual_information, atol=1e-7)
    assert np.allclose(as_tensors.std.numpy(), as_arrays.std, atol=1e-7)


@pytest.mark.parametrize("samples", [1, 3, 100])
def test_summarize_logits_agrees_with_summarize_of_the_softmax_and_keeps_rows_apart(samples):
    logits = torch.randn(samples, 9, 10, generator=torch.Generator().manual_seed(5)) * 4
    summary, probs = summarize_logits(logits)
    reference = summarize(torch.softmax(logits, -1).numpy())
    assert probs.shape == (samples, 9, 10) and probs.dtype == np.float64
    assert np.allclose(probs, torch.softmax(logits, -1).numpy(), atol=1e-6)
    for name in ("mean_probabilities", "std", "predictive_entropy", "expected_entropy", "mutual_information"):
        assert np.allclose(getattr(summary, name), getattr(reference, name), atol=1e-6), name
    assert np.array_equal(summary.variation_ratio, reference.variation_ratio)
    for rows in (slice(0, 1), slice(4, 6), slice(8, 9)):
        alone, alone_probs = summarize_logits(logits[:, rows])
        assert np.array_equal(alone_probs, probs[:, rows])
        for name in ("mean_probabilities", "std", "expected_entropy", "mutual_information"):
            assert np.array_equal(getattr(alone, name), getattr(summary, name)[rows]), name
        assert np.array_equal(alone.variation_ratio, summary.variation_ratio[rows])


def test_a_pass_with_tied_logits_votes_for_the_first_of_them_as_argmax_does():
    logits = torch.tensor([[[5.0, 5.0, 2.0]], [[4.0, 4.0, 0.0]], [[0.0, 1.0, 0.0]]])  # (T=3, B=1, C=3)
    summary, _ = summarize_logits(logits)
    assert summary.variation_ratio[0] == pytest.approx(1 / 3)  # class 0 twice; the last tied: 0
    assert np.array_equal(summary.variation_ratio, variation_ratio(torch.softmax(logits, -1).numpy()))
