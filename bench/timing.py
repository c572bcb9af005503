"""In-process timing shared by the sampler and statistics benchmarks."""

from __future__ import annotations

import time
from collections.abc import Callable


def median_seconds(call: Callable[[int], object], budget_s: float, min_calls: int, max_calls: int) -> float:
    """Median seconds of `call(n)` for n = 0, 1, ...: at least `min_calls` calls, then more while
    `budget_s` lasts, at most `max_calls`. Warm the call up first."""
    times: list[float] = []
    deadline = time.perf_counter() + budget_s
    while len(times) < min_calls or (time.perf_counter() < deadline and len(times) < max_calls):
        start = time.perf_counter()
        call(len(times))
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]
