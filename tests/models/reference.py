"""A plain, per-element reference of the uncertainty statistics, to check models.uncertainty against."""

from __future__ import annotations

import math

import numpy as np


def reference_statistics(probs: np.ndarray) -> dict[str, np.ndarray]:
    """(T, B, C) probabilities -> each statistic, computed input by input with Python floats."""
    samples, inputs, classes = probs.shape
    out: dict[str, list] = {k: [] for k in ("mean", "std", "total", "aleatoric", "mi", "vr")}
    for b in range(inputs):
        passes = [[float(probs[t, b, c]) for c in range(classes)] for t in range(samples)]
        mean = [sum(p[c] for p in passes) / samples for c in range(classes)]
        std = [math.sqrt(sum((p[c] - mean[c]) ** 2 for p in passes) / samples) for c in range(classes)]
        h = lambda q: -sum(x * math.log(x) for x in q if x > 0)  # noqa: E731
        total, aleatoric = h(mean), sum(h(p) for p in passes) / samples
        votes = [0] * classes
        for p in passes:
            votes[p.index(max(p))] += 1
        for key, value in zip(
            out,
            (mean, std, total, aleatoric, max(total - aleatoric, 0.0), 1 - max(votes) / samples),
            strict=True,
        ):
            out[key].append(value)
    return {k: np.array(v) for k, v in out.items()}
