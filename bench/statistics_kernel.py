"""What the compiled statistics kernel buys: `models.uncertainty.summarize_logits` (models/_kernels.c,
the one implementation the service and training use) against the same statistics in vectorized
numpy, timed in process on random logits of C = 10 classes, T = 10, 100, 1000 passes, for one input
and for 16. The numpy version lives here only, as the baseline; before timing, the two are checked
to agree to 1e-9."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import numpy as np

from bench.timing import median_seconds
from models.uncertainty import UncertaintySummary, entropy, summarize_logits

CLASSES = 10
Summarize = Callable[[np.ndarray], UncertaintySummary]
BATCHES = (1, 16)


def numpy_summary(logits: np.ndarray) -> UncertaintySummary:
    """(T, B, C) float32 logits -> their statistics, in numpy calls over whole arrays."""
    z = logits.astype(np.float64)
    z -= z.max(axis=-1, keepdims=True)
    probs = np.exp(z)
    probs /= probs.sum(axis=-1, keepdims=True)  # (T, B, C)
    mean = probs.mean(axis=0)  # (B, C)
    predictive = entropy(mean)  # (B,)
    expected = entropy(probs).mean(axis=0)  # (B,)
    votes = (probs.argmax(axis=-1)[..., None] == np.arange(logits.shape[-1])).sum(axis=0)  # (B, C)
    return UncertaintySummary(
        mean_probabilities=mean,
        std=probs.std(axis=0),
        predictive_entropy=predictive,
        expected_entropy=expected,
        mutual_information=np.maximum(predictive - expected, 0.0),
        variation_ratio=1.0 - votes.max(axis=-1) / len(logits),
    )


def compiled_summary(logits: np.ndarray) -> UncertaintySummary:
    return summarize_logits(logits)[0]


METHODS: dict[str, Summarize] = {
    "compiled": compiled_summary,
    "numpy": numpy_summary,
}


def _agree(a: UncertaintySummary, b: UncertaintySummary) -> None:
    for name in UncertaintySummary.__dataclass_fields__:
        if not np.allclose(getattr(a, name), getattr(b, name), rtol=0, atol=1e-9):
            raise RuntimeError(f"the numpy baseline's {name} differs from the kernel's")


def time_call(method: Summarize, logits: np.ndarray, budget_s: float) -> float:
    """Median seconds of one call, repeating within about `budget_s`."""
    method(logits)  # warm-up
    return median_seconds(lambda n: method(logits), budget_s, 5, 2000)


def run(samples_list: tuple[int, ...], budget_s: float) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    generator = np.random.default_rng(0)
    for batch, samples in itertools.product(BATCHES, samples_list):
        logits = (3 * generator.standard_normal((samples, batch, CLASSES))).astype(np.float32)
        _agree(compiled_summary(logits), numpy_summary(logits))
        seconds = {name: time_call(method, logits, budget_s) for name, method in METHODS.items()}
        rows.append(
            {
                "samples": samples,
                "batch": batch,
                "seconds": seconds,
                "speedup_vs_numpy": seconds["numpy"] / seconds["compiled"],
            }
        )
        print(
            f"statistics B={batch} T={samples}: "
            + ", ".join(f"{name} {s * 1e6:.1f} us" for name, s in seconds.items()),
            flush=True,
        )
    return rows
