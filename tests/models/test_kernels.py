"""models._kernels against plain numpy: the folded output layer and the MC summary, at shapes that
exercise their padding (units not a multiple of 4 or 8, classes past one sweep of 16), one pass,
one class, batches large enough to run without the GIL, and the refusal of bad arrays."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models import _kernels
from models.uncertainty import summarize, summarize_logits


def coins(octets: np.ndarray, width: int) -> np.ndarray:
    """(T, B, bytes) uint8 -> (T, B, width) 0/1 float64, coin j at bit j % 8 of byte j // 8."""
    return np.unpackbits(octets, axis=-1, bitorder="little")[..., :width].astype(np.float64)


def reference_masked_output(
    h: np.ndarray, weight: np.ndarray, bias: np.ndarray, octets: np.ndarray
) -> np.ndarray:
    """The reference: drop units of h (B, D) with the coins, scale by 2, output layer: (B, C, T)."""
    dropped = coins(octets, h.shape[1]) * 2 * h.astype(np.float64)  # (T, B, D)
    logits = dropped @ weight.T.astype(np.float64) + bias  # (T, B, C)
    return logits.transpose(1, 2, 0)


def random_case(rows: int, width: int, classes: int, passes: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    h = np.maximum(rng.normal(size=(rows, width)), 0).astype(np.float32)  # post-ReLU: some zeros
    weight = rng.normal(size=(classes, width)).astype(np.float32)
    bias = rng.normal(size=classes).astype(np.float32)
    # every byte random, so the coins past `width` in the last byte are set too: they must select nothing
    octets = rng.integers(0, 256, size=(passes, rows, -(-width // 8)), dtype=np.uint8)
    return h, weight, bias, octets


def run_masked_output(h, weight, bias, octets) -> np.ndarray:
    out = np.empty((h.shape[0], weight.shape[0], octets.shape[0]), dtype=np.float32)
    _kernels.masked_output(h, weight, bias, octets, out)
    return out


@pytest.mark.parametrize(
    ("rows", "width", "classes", "passes"),
    [(1, 128, 10, 100), (3, 13, 1, 7), (2, 8, 7, 1), (4, 37, 21, 33), (1, 1024, 35, 5)],
    ids=["seed model", "13 units, 1 class", "one pass", "classes past one sweep", "wide"],
)
def test_masked_output_is_dropout_then_the_output_layer(rows, width, classes, passes):
    h, weight, bias, octets = random_case(rows, width, classes, passes)
    ours = run_masked_output(h, weight, bias, octets)
    assert np.allclose(ours, reference_masked_output(h, weight, bias, octets), rtol=1e-5, atol=1e-4)


def test_masked_output_of_one_input_is_the_same_in_any_batch():
    h, weight, bias, octets = random_case(300, 128, 10, 100)  # past the GIL-free threshold
    batch = run_masked_output(h, weight, bias, octets)
    for row in (0, 151, 299):
        alone = run_masked_output(
            h[row : row + 1], weight, bias, np.ascontiguousarray(octets[:, row : row + 1])
        )
        assert np.array_equal(alone[0], batch[row])


def summarize_arrays(logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """logits (B, C, T) float32 -> probs (B, C, T) and stats (B, 2C + 4)."""
    probs = np.empty(logits.shape)
    stats = np.empty((logits.shape[0], 2 * logits.shape[1] + 4))
    _kernels.summarize(logits, probs, stats)
    return probs, stats


@pytest.mark.parametrize(("rows", "classes", "passes"), [(5, 10, 100), (2, 1, 9), (3, 21, 1), (200, 10, 100)])
def test_summarize_gives_the_statistics_of_the_softmax(rows, classes, passes):
    logits = (np.random.default_rng(1).normal(size=(rows, classes, passes)) * 4).astype(np.float32)
    probs, stats = summarize_arrays(logits)
    softmax = torch.softmax(torch.from_numpy(logits).double(), dim=1).numpy()  # (B, C, T)
    reference = summarize(softmax.transpose(2, 0, 1))  # from (T, B, C)
    assert np.allclose(probs, softmax, atol=1e-12)
    expected = np.column_stack(
        [
            reference.mean_probabilities,
            reference.std,
            reference.predictive_entropy,
            reference.expected_entropy,
            reference.mutual_information,
            reference.variation_ratio,
        ]
    )
    assert np.allclose(stats, expected, atol=1e-12)


def test_one_class_is_certain():
    _, stats = summarize_arrays(np.random.default_rng(2).normal(size=(3, 1, 20)).astype(np.float32))
    assert np.array_equal(stats, np.tile([1.0, 0.0, 0.0, 0.0, 0.0, 0.0], (3, 1)))


def test_summarize_logits_fields_have_the_batch_first_and_slice_by_rows():
    summary, probs = summarize_logits(torch.randn(100, 4, 10))
    assert summary.mean_probabilities.shape == summary.std.shape == (4, 10)
    assert summary.variation_ratio.shape == (4,) and probs.shape == (100, 4, 10)
    assert np.array_equal(summary.rows(slice(1, 3)).std, summary.std[1:3])


def test_bad_arrays_are_refused_not_read():
    h, weight, bias, octets = random_case(2, 16, 3, 4)
    out = np.empty((2, 3, 4), dtype=np.float32)
    with pytest.raises(ValueError, match="h must be"):
        _kernels.masked_output(h.astype(np.float64), weight, bias, octets, out)
    with pytest.raises(ValueError, match="octets must be"):
        _kernels.masked_output(h, weight, bias, octets.astype(np.int64), out)
    with pytest.raises(ValueError, match="disagree"):
        _kernels.masked_output(h, weight, bias, np.ascontiguousarray(octets[:, :1]), out)
    with pytest.raises(ValueError, match="disagree"):
        narrow = [np.ascontiguousarray(a) for a in (h[:, :15], weight[:, :15], octets[..., :1])]
        _kernels.masked_output(narrow[0], narrow[1], bias, narrow[2], out)  # 8 coins for 15 units
    with pytest.raises(ValueError, match="not C-contiguous"):
        _kernels.masked_output(h, np.asfortranarray(weight), bias, octets, out)
    out.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        _kernels.masked_output(h, weight, bias, octets, out)
    logits = np.zeros((2, 3, 4), dtype=np.float32)
    with pytest.raises(ValueError, match="disagree"):
        _kernels.summarize(logits, np.empty((2, 3, 4)), np.empty((2, 9)))
    with pytest.raises(ValueError, match="probs must be"):
        _kernels.summarize(logits, np.empty((2, 3, 4), dtype=np.float32), np.empty((2, 10)))
    with pytest.raises(ValueError, match="disagree"):
        _kernels.summarize(np.zeros((2, 3, 0), dtype=np.float32), np.empty((2, 3, 0)), np.empty((2, 10)))
