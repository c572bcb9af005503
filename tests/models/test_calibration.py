"""Temperature scaling of the MC mean and the abstention threshold."""

from __future__ import annotations

import numpy as np
import pytest

from models import _kernels
from models.calibration import (
    abstains,
    apply_temperature,
    calibrate_abstention,
    fit_temperature,
    selective_threshold,
)
from models.spec import Abstention
from models.uncertainty import summarize_logits


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


@pytest.fixture
def probabilities() -> np.ndarray:
    p = softmax(np.random.default_rng(0).normal(0, 3, (64, 10)))
    p[0] = [1.0] + [0.0] * 9  # a one-hot row keeps its zeros
    return p


def test_temperature_one_is_the_identity(probabilities):
    assert apply_temperature(probabilities, 1.0) is probabilities


@pytest.mark.parametrize("temperature", [0.5, 0.68, 2.0])
def test_temperature_is_the_softmax_of_the_scaled_log_mean(probabilities, temperature):
    scaled = apply_temperature(probabilities, temperature)
    with np.errstate(divide="ignore"):
        expected = softmax(np.log(probabilities) / temperature)
    np.testing.assert_allclose(scaled, expected, rtol=1e-12, atol=1e-300)
    np.testing.assert_allclose(scaled.sum(1), 1.0, rtol=1e-15)
    assert (scaled.argmax(1) == probabilities.argmax(1)).all()
    sharper = scaled.max(1) >= probabilities.max(1) - 1e-15
    assert sharper.all() if temperature < 1 else (~sharper[1:]).all()


def test_temperature_rows_do_not_depend_on_their_batch(probabilities):
    whole = apply_temperature(probabilities, 0.6)
    for i in (0, 5, 63):
        assert apply_temperature(probabilities[i : i + 1], 0.6).tobytes() == whole[i].tobytes()


def test_the_compiled_temperature_refuses_arrays_that_disagree(probabilities):
    out = np.empty(probabilities.shape)
    _kernels.temper(probabilities, 0.5, out)  # agree
    with pytest.raises(ValueError):
        _kernels.temper(probabilities, 0.5, out[:, :9].copy())
    with pytest.raises(ValueError):
        _kernels.temper(probabilities.astype(np.float32), 0.5, out)
    with pytest.raises(ValueError):
        _kernels.temper(probabilities, 0.0, out)


def test_fit_recovers_the_temperature_of_an_overconfident_model():
    rng = np.random.default_rng(1)
    z = rng.normal(0, 2, (20000, 10))
    labels = (softmax(z).cumsum(1) > rng.random((len(z), 1))).argmax(1)  # labels follow softmax(z)
    reported = softmax(2.0 * z)  # the model is twice too sharp: temperature 2 undoes it
    assert fit_temperature(reported, labels) == pytest.approx(2.0, rel=0.05)
    assert fit_temperature(softmax(z), labels) == pytest.approx(1.0, rel=0.05)


def test_selective_threshold_is_the_largest_meeting_the_target():
    scores = np.array([0.1, 0.2, 0.3, 0.3, 0.5, 0.6, 0.9])
    correct = np.array([True, True, True, False, True, True, False])
    # accepting up to 0.2: 0 errors in 2; up to 0.3 (the tie enters whole): 1 in 4; up to 0.6: 1 in 6
    assert selective_threshold(scores, correct, 0.0) == (0.2, 0.0, 2 / 7)
    assert selective_threshold(scores, correct, 0.2) == (0.6, 1 / 6, 6 / 7)
    assert selective_threshold(scores, correct, 0.25) == (0.6, 1 / 6, 6 / 7)
    assert selective_threshold(scores, correct, 2 / 7) == (0.9, 2 / 7, 1.0)
    assert selective_threshold(scores, ~np.ones(7, dtype=bool), 0.1) == (None, 0.0, 0.0)


def test_abstention_policy_on_statistics():
    logits = np.random.default_rng(2).normal(0, 2, (20, 50, 10)).astype(np.float32)
    summary, _ = summarize_logits(logits)
    labels = summary.mean_probabilities.argmax(-1)
    labels[:5] = (labels[:5] + 1) % 10  # five errors
    policy = calibrate_abstention(summary, labels, 0.05, samples=20, score="predictive_entropy")
    refused = abstains(summary, policy)
    accepted_errors = (summary.mean_probabilities.argmax(-1) != labels)[~refused]
    assert accepted_errors.mean() <= 0.05 and policy.validation_risk == accepted_errors.mean()
    assert policy.validation_accepted == (~refused).mean()
    never = Abstention("predictive_entropy", None, 0.0, 0.0, 0.0, 20)
    assert abstains(summary, never).all()
