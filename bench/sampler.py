"""In-process MC sampler timings: shared prefix vs whole-input replication (baal style) vs a loop
of T passes, for T = 10, 100, 1000 on the seed and paper architectures (random weights: the
arithmetic, not the accuracy, is measured), for one image and for a micro-batch of 16 (what the
service runs at moderate concurrency). At one image a call is a few dozen small tensor operations,
so per-operation overhead, not arithmetic, dominates it."""

from __future__ import annotations

import itertools
import time

import torch

from models.frozen import FrozenMLP, freeze
from models.mc_dropout import Method, generator_for, mc_dropout_logits
from models.network import DropoutMLP
from models.spec import MLPSpec

ARCHITECTURES = {
    "seed": MLPSpec(hidden_sizes=(128,), input_dropout=0.0, hidden_dropout=0.5),
    "paper": MLPSpec(hidden_sizes=(1024, 1024, 1024), input_dropout=0.2, hidden_dropout=0.5),
}
METHODS: tuple[Method, ...] = ("shared_prefix", "replicate", "loop")


def time_call(model: FrozenMLP, x: torch.Tensor, samples: int, method: Method, budget_s: float) -> float:
    """Median seconds of one call, repeating within about `budget_s`."""
    mc_dropout_logits(model, x, samples, generator_for(0), method)  # warm-up
    times: list[float] = []
    deadline = time.perf_counter() + budget_s
    while len(times) < 3 or (time.perf_counter() < deadline and len(times) < 200):
        start = time.perf_counter()
        mc_dropout_logits(model, x, samples, generator_for(len(times)), method)
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


BATCHES = (1, 16)


def run(samples_list: tuple[int, ...], budget_s: float) -> list[dict[str, object]]:
    torch.set_num_threads(1)
    rows: list[dict[str, object]] = []
    for (name, spec), batch in itertools.product(ARCHITECTURES.items(), BATCHES):
        model = freeze(DropoutMLP(spec).eval())  # as the service serves it, for all three methods
        x = torch.rand(batch, 784, generator=torch.Generator().manual_seed(0))
        for samples in samples_list:
            timings = {method: time_call(model, x, samples, method, budget_s) for method in METHODS}
            rows.append(
                {
                    "architecture": name,
                    "samples": samples,
                    "batch": batch,
                    "seconds": timings,
                    "speedup_vs_replicate": timings["replicate"] / timings["shared_prefix"],
                    "speedup_vs_loop": timings["loop"] / timings["shared_prefix"],
                }
            )
            print(
                f"sampler {name} B={batch} T={samples}: "
                + ", ".join(f"{m} {t * 1e3:.3f} ms" for m, t in timings.items())
            )
    return rows
