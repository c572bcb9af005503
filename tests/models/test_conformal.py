"""Split-conformal prediction sets: the finite-sample quantile, the coverage guarantee on an
exchangeable synthetic problem, sets never empty and nested in the level; the manifest section."""

from __future__ import annotations

import math
from itertools import pairwise

import numpy as np
import pytest

from models.conformal import (
    LEVELS,
    calibrate_level,
    calibrate_raps,
    conformal_quantile,
    conformity_scores,
    prediction_sets,
    quantile_rank,
)
from models.spec import Abstention, Calibration, Conformal, ConformalLevel, Manifest, MLPSpec, Normalization


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def synthetic(rng: np.random.Generator, n: int, classes: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """An exchangeable problem with a deliberately overconfident model: labels drawn from
    softmax(z), the model reports softmax(3 z). The guarantee must not care."""
    z = rng.normal(0.0, 1.5, (n, classes))
    truth = softmax(z)
    labels = (truth.cumsum(1) > rng.random((n, 1))).argmax(1)
    return softmax(3.0 * z), labels


def test_quantile_rank_is_the_finite_sample_correction():
    assert quantile_rank(99, 0.9) == 90  # ceil(100 * 0.9)
    assert quantile_rank(19, 0.95) == 19
    assert quantile_rank(1000, 0.99) == 991  # ceil(1001 * 0.99) = ceil(990.99)
    # 3800 * 0.535 is 2033.0000000000002 in floats; the level is read as written, 535/1000, so k = 2033
    assert math.ceil(3800 * 0.535) == 2034 and quantile_rank(3799, 0.535) == 2033


def test_quantile_is_the_kth_smallest_score_or_none():
    scores = np.random.default_rng(0).permutation(np.arange(1.0, 100.0))  # 1..99, n = 99
    assert conformal_quantile(scores, 0.9) == 90.0
    assert conformal_quantile(scores, 0.5) == 50.0
    assert conformal_quantile(scores, 0.99) == 99.0  # k = ceil(100 * 0.99) = 99 = n
    assert conformal_quantile(scores, 0.995) is None  # k = 100 > n: the set must be every label
    # the plain empirical quantile would be lower: the correction is what makes coverage >= level
    assert float(np.quantile(scores, 0.9)) < conformal_quantile(scores, 0.9)


def test_scores_accumulate_mass_in_rank_order_plus_the_penalty():
    p = np.array([[0.1, 0.7, 0.2], [0.5, 0.25, 0.25]])
    np.testing.assert_allclose(conformity_scores(p), [[1.0, 0.7, 0.9], [0.5, 0.75, 1.0]])
    # ties rank by class id; ranks past 1 pay 0.01 each
    np.testing.assert_allclose(conformity_scores(p, 0.01, 1), [[1.02, 0.7, 0.91], [0.5, 0.76, 1.02]])


def test_sets_are_never_empty_and_none_means_every_label():
    rng = np.random.default_rng(1)
    probabilities = softmax(rng.normal(0, 4, (500, 10)))
    tight = prediction_sets(probabilities, ConformalLevel(0.9, quantile=0.0))
    assert (tight.sum(1) == 1).all()
    assert (tight.argmax(1) == probabilities.argmax(1)).all()  # the one label is the top label
    assert prediction_sets(probabilities, ConformalLevel(0.999, quantile=None)).all()
    for penalty in (0.0, 0.01, 0.5):
        level = calibrate_level(*synthetic(rng, 300), 0.9, penalty)
        assert prediction_sets(probabilities, level).sum(1).min() >= 1


@pytest.mark.parametrize("penalty", [0.0, 0.01])
def test_sets_are_nested_and_grow_with_the_level(penalty):
    rng = np.random.default_rng(2)
    calibration, test = synthetic(rng, 2000), synthetic(rng, 2000)
    sets = [prediction_sets(test[0], calibrate_level(*calibration, level, penalty)) for level in LEVELS]
    for smaller, larger in pairwise(sets):
        assert (larger | ~smaller).all()  # every label of the lower level's set is in the higher's
        assert larger.sum() >= smaller.sum()
    sizes = [s.sum(1).mean() for s in sets]
    assert sizes == sorted(sizes) and sizes[-1] > sizes[0]


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("penalty", [0.0, 0.01])
def test_coverage_on_an_exchangeable_problem(seed, penalty):
    """Coverage at least the level within sampling error: the test share covered varies with the
    calibration draw (Beta, variance ~ a(1-a)/n_cal) and the test draw (~ a(1-a)/n_test)."""
    rng = np.random.default_rng(100 + seed)
    n_calibration, n_test = 2000, 20000
    calibration, (probabilities, labels) = synthetic(rng, n_calibration), synthetic(rng, n_test)
    for level in LEVELS:
        members = prediction_sets(probabilities, calibrate_level(*calibration, level, penalty))
        coverage = members[np.arange(n_test), labels].mean()
        spread = math.sqrt(level * (1 - level) * (1 / n_calibration + 1 / n_test))
        assert coverage >= level - 3 * spread, (level, coverage)


def test_coverage_averaged_over_calibration_draws_meets_the_level():
    """The guarantee is marginal over the calibration draw: averaged over many, coverage >= level."""
    rng = np.random.default_rng(7)
    probabilities, labels = synthetic(rng, 20000)
    rows = np.arange(len(labels))
    coverages = {level: [] for level in (0.9, 0.99)}
    for _ in range(40):
        calibration = synthetic(rng, 500)
        for level in coverages:
            members = prediction_sets(probabilities, calibrate_level(*calibration, level))
            coverages[level].append(members[rows, labels].mean())
    for level, values in coverages.items():
        assert np.mean(values) >= level - 3 * np.std(values) / math.sqrt(len(values))


def test_raps_tuned_on_one_split_calibrated_on_another_covers():
    rng = np.random.default_rng(3)
    levels = calibrate_raps(synthetic(rng, 1000), synthetic(rng, 4000), (0.9, 0.99))
    probabilities, labels = synthetic(rng, 20000)
    for level in levels:
        assert level.penalty >= 0 and level.penalty_from_rank >= 1
        covered = prediction_sets(probabilities, level)[np.arange(len(labels)), labels].mean()
        assert covered >= level.coverage - 3 * math.sqrt(level.coverage * (1 - level.coverage) / 4000)


def manifest(**sections) -> Manifest:
    return Manifest(
        name="m",
        spec=MLPSpec(hidden_sizes=(4,)),
        normalization=Normalization(),
        class_names=[str(d) for d in range(10)],
        **sections,
    )


def test_manifest_sections_round_trip_and_older_manifests_load_without_them():
    conformal = Conformal(
        method="raps",
        samples=100,
        calibration_size=8000,
        levels=(ConformalLevel(0.99, 1.0001, 0.01, 1), ConformalLevel(0.999, None)),
        provenance={"split": "validation"},
    )
    abstention = Abstention("predictive_entropy", 0.7, 0.005, 0.0049, 0.91, 100)
    full = manifest(calibration=Calibration(temperature=0.7), conformal=conformal, abstention=abstention)
    loaded = Manifest.from_dict(full.to_dict())
    assert loaded.conformal == conformal and loaded.abstention == abstention
    assert loaded.calibration.temperature == 0.7
    assert loaded.conformal.level(0.99) == conformal.levels[0] and loaded.conformal.level(0.95) is None

    older = manifest().to_dict()
    for key in ("conformal", "abstention"):
        del older[key]
    del older["calibration"]["temperature"]
    plain = Manifest.from_dict(older)
    assert plain.conformal is None and plain.abstention is None and plain.calibration.temperature == 1.0


def test_temperature_must_be_positive():
    with pytest.raises(ValueError, match="temperature"):
        Calibration(temperature=0.0)
