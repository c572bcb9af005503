"""Properties of the uncertainty statistics over arbitrary logits (hypothesis): probabilities that
sum to 1, 0 <= MI <= predictive entropy <= log C, and an input's statistics independent of the
batch around it."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from models.uncertainty import summarize_logits

shapes = st.tuples(st.integers(1, 40), st.integers(1, 5), st.integers(2, 12))  # (T, B, C)
logit_values = st.floats(-1e4, 1e4, allow_nan=False, width=32)
logits = shapes.flatmap(lambda shape: arrays(np.float32, shape, elements=logit_values))
EPS = 1e-9


@settings(max_examples=300, deadline=None, database=None)
@given(logits)
def test_statistics_stay_in_their_bounds(logits: np.ndarray):
    passes, _, classes = logits.shape
    summary, probs = summarize_logits(logits)
    assert np.all(probs >= 0) and np.all(probs <= 1)
    np.testing.assert_allclose(probs.sum(axis=-1), 1.0, atol=1e-9)
    p = summary.mean_probabilities
    assert np.all(p >= 0) and np.all(p <= 1)
    np.testing.assert_allclose(p.sum(axis=-1), 1.0, atol=1e-9)
    assert np.all(summary.std >= 0) and np.all(summary.std <= 0.5 + EPS)
    log_c = math.log(classes)
    mi, pe, ee = summary.mutual_information, summary.predictive_entropy, summary.expected_entropy
    assert np.all(mi >= 0)
    assert np.all(mi <= pe + EPS)
    assert np.all(pe <= log_c + EPS)
    assert np.all(ee >= -EPS) and np.all(ee <= pe + EPS)
    vr = summary.variation_ratio
    assert np.all(vr >= 0) and np.all(vr <= 1 - 1 / classes + EPS)  # the modal class has >= T/C votes
    assert np.all(np.isfinite(np.concatenate([p.ravel(), summary.std.ravel(), mi, pe, ee, vr])))
    if passes == 1:  # no disagreement; MI is H[p] - H[p] computed two ways, so equal to rounding
        assert np.all(mi <= EPS) and np.all(vr == 0) and np.all(summary.std <= EPS)


@settings(max_examples=100, deadline=None, database=None)
@given(logits)
def test_an_inputs_statistics_do_not_depend_on_its_batch(logits: np.ndarray):
    together, _ = summarize_logits(logits)
    for b in range(logits.shape[1]):
        alone, _ = summarize_logits(logits[:, b : b + 1])
        for name in ("mean_probabilities", "std", "predictive_entropy", "mutual_information"):
            assert getattr(alone, name)[0].tobytes() == getattr(together, name)[b].tobytes(), name
