"""Split-conformal prediction sets: the labels a caller can rely on, with a coverage guarantee.

Calibrated at training time on held-out validation inputs (never the test set) and stored in the
manifest; built by the service from the same scores with the same code. On inputs exchangeable with
the calibration set, the set holds the true label with probability at least the level's coverage
(Vovk et al. 2005; Romano, Sesia and Candès 2020).

Scores are those of adaptive prediction sets (APS, Romano et al. 2020) with the rank penalty of
RAPS (Angelopoulos et al. 2021): a label's score is the probability mass of every label ranked at or
above it, plus `penalty` per rank past `penalty_from_rank`. A penalty of 0 is plain APS. Sets are
non-randomized and always hold the most probable label, so none is ever empty (adding a label never
lowers coverage). The quantile is the ceil((n + 1) * coverage)-th smallest of the n calibration
scores, the finite-sample correction, i.e. the empirical ceil((n + 1)(1 - alpha)) / n quantile.

All arithmetic is numpy's exact IEEE operations (sort, sequential cumulative sum, multiply, add,
compare), row by row: a set does not depend on the batch around the input or on the CPU.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

from models.spec import ConformalLevel

LEVELS = (0.90, 0.95, 0.99, 0.995, 0.999)  # a 98.7%-accurate model covers 95% with its top label
PENALTIES = (0.0, 0.001, 0.01, 0.1, 0.2, 0.5)  # the RAPS paper's lambda grid, and 0 (APS)


def _ranked_scores(
    probabilities: np.ndarray, penalty: float, penalty_from_rank: int
) -> tuple[np.ndarray, np.ndarray]:
    """(order, scores in that order), both (B, C): class ids by descending probability (ties by
    class id), and the score of the label at each rank."""
    order = np.argsort(-probabilities, axis=1, kind="stable")  # (B, C) class ids, most probable first
    cumulative = np.cumsum(probabilities[_rows(order), order], axis=1)  # (B, C)
    if penalty:
        ranks = np.arange(1, probabilities.shape[1] + 1)
        cumulative += penalty * np.maximum(ranks - penalty_from_rank, 0)  # (C,) broadcast over rows
    return order, cumulative


def _rows(order: np.ndarray) -> np.ndarray:
    """(B, 1) row ids, to index (B, C) arrays with `order`."""
    return np.arange(len(order))[:, None]


def conformity_scores(
    probabilities: np.ndarray, penalty: float = 0.0, penalty_from_rank: int = 1
) -> np.ndarray:
    """(B, C) probabilities -> (B, C) scores of every label; lower = more conforming."""
    order, ranked = _ranked_scores(probabilities, penalty, penalty_from_rank)
    scores = np.empty_like(ranked)
    scores[_rows(order), order] = ranked
    return scores


def quantile_rank(n: int, coverage: float) -> int:
    """k = ceil((n + 1) * coverage): the calibration score at this rank (1-based) is the quantile.
    Exact rational arithmetic on the level as written (0.99 is 99/100), so no rounding moves k."""
    return math.ceil((n + 1) * Fraction(str(coverage)))


def conformal_quantile(scores: np.ndarray, coverage: float) -> float | None:
    """The k-th smallest of the n calibration scores, k = ceil((n + 1) * coverage); None when k > n
    (too few scores for the level: the set must then be every label)."""
    k = quantile_rank(len(scores), coverage)
    if k > len(scores):
        return None
    return float(np.sort(scores)[k - 1])


def calibrate_level(
    probabilities: np.ndarray,
    labels: np.ndarray,
    coverage: float,
    penalty: float = 0.0,
    penalty_from_rank: int = 1,
) -> ConformalLevel:
    """One level's quantile from calibration probabilities (N, C) and their true labels (N,)."""
    scores = conformity_scores(probabilities, penalty, penalty_from_rank)  # (N, C)
    quantile = conformal_quantile(scores[np.arange(len(labels)), labels], coverage)  # the true labels'

    return ConformalLevel(coverage, quantile, penalty, penalty_from_rank)


def prediction_sets(probabilities: np.ndarray, level: ConformalLevel) -> np.ndarray:
    """(B, C) probabilities -> (B, C) bool membership: scores at most the level's quantile, and the
    most probable label always."""
    if level.quantile is None:
        return np.ones(probabilities.shape, dtype=bool)
    order, ranked = _ranked_scores(probabilities, level.penalty, level.penalty_from_rank)
    kept = ranked <= level.quantile  # (B, C) in rank order: the same scores calibration compared
    kept[:, 0] = True  # the top label
    members = np.empty_like(kept)
    members[_rows(order), order] = kept
    return members


def tune_penalty(probabilities: np.ndarray, labels: np.ndarray, coverage: float) -> tuple[float, int]:
    """RAPS's size-optimal (penalty, penalty_from_rank) on a tuning split: penalty_from_rank up to the
    `coverage` quantile of the true labels' ranks, penalty from PENALTIES; each candidate calibrated
    and measured (mean set size) on the tuning split itself. The tuning split must be disjoint from
    the calibration split, or the coverage guarantee is lost."""
    order = np.argsort(-probabilities, axis=1, kind="stable")
    ranks = 1 + np.argmax(order == labels[:, None], axis=1)  # (N,) 1-based rank of the true label
    largest = conformal_quantile(ranks.astype(np.float64), coverage)
    top_rank = probabilities.shape[1] if largest is None else int(largest)
    best, best_size = (0.0, 1), math.inf
    for penalty in PENALTIES:
        for from_rank in range(1, top_rank + 1) if penalty else (1,):
            level = calibrate_level(probabilities, labels, coverage, penalty, from_rank)
            size = float(prediction_sets(probabilities, level).sum(1).mean())
            if size < best_size:
                best, best_size = (penalty, from_rank), size
    return best


def calibrate_raps(
    tuning: tuple[np.ndarray, np.ndarray],
    calibration: tuple[np.ndarray, np.ndarray],
    levels: tuple[float, ...] = LEVELS,
) -> tuple[ConformalLevel, ...]:
    """Every level: its penalty tuned on `tuning` (probabilities, labels), its quantile calibrated on
    the disjoint `calibration` split."""
    return tuple(
        calibrate_level(*calibration, coverage, *tune_penalty(*tuning, coverage)) for coverage in levels
    )
