"""In-process MC sampler timings, T = 10, 100, 1000 passes on the seed and paper architectures
(random weights: the arithmetic, not the accuracy, is measured), for one image and for 16 at once.
Three ways to draw the same kind of (T, B, C) logits, all with masks from one `MaskSource`:

- shared prefix: `models.mc_dropout.mc_dropout_logits`, what the service runs: the deterministic
  prefix up to the first active dropout once per input, only the stochastic suffix T times;
- replicate: the input copied T times and one full stochastic pass over the T x B rows (baal's way);
- loop: T full stochastic passes over the B rows;
- torch last layer: the shared prefix in the same chunks, the last dropout and the output layer as
  torch calls (`dropout`, then `output_layer`): what the compiled `masked_output`
  (models/_kernels.c) replaced.

The baselines live here, built from the model's public pieces (`normalize`, `hidden_layer`,
`output`, `dropout`). At one image a call is a few dozen small tensor operations, so per-operation
overhead, not arithmetic, dominates it."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import torch
from torch import Tensor

from bench.timing import median_seconds
from models.mc_dropout import MaskSource, dropout, mc_dropout_logits, passes_per_chunk
from models.network import DropoutMLP
from models.spec import MLPSpec

ARCHITECTURES = {
    "seed": MLPSpec(hidden_sizes=(128,), input_dropout=0.0, hidden_dropout=0.5),
    "paper": MLPSpec(hidden_sizes=(1024, 1024, 1024), input_dropout=0.2, hidden_dropout=0.5),
}
BATCHES = (1, 16)

Sampler = Callable[[DropoutMLP, Tensor, int, MaskSource], Tensor]


def stochastic_pass(model: DropoutMLP, x: Tensor, masks: MaskSource) -> Tensor:
    """One full pass with dropout at every layer: (N, 784) -> (N, C) logits."""
    h = dropout(model.normalize(x), model.spec.input_dropout, masks)  # (N, 784)
    for index in range(len(model.hidden)):
        h = dropout(model.hidden_layer(index, h), model.spec.hidden_dropout, masks)  # (N, D)
    return model.output(h)


def replicate(model: DropoutMLP, x: Tensor, samples: int, masks: MaskSource) -> Tensor:
    """The input copied T times, one pass over all copies: (B, 784) -> (T, B, C)."""
    logits = stochastic_pass(model, x.repeat(samples, 1), masks)  # (T * B, C), T blocks of B
    return logits.reshape(samples, x.shape[0], -1)


def loop(model: DropoutMLP, x: Tensor, samples: int, masks: MaskSource) -> Tensor:
    """T passes one after the other: (B, 784) -> (T, B, C)."""
    return torch.stack([stochastic_pass(model, x, masks) for _ in range(samples)])


def torch_last_layer(model: DropoutMLP, x: Tensor, samples: int, masks: MaskSource) -> Tensor:
    """`mc_dropout_logits` as it was before the compiled last layer: the same shared prefix and
    chunks of passes, the last dropout and the output layer as torch calls: (B, 784) -> (T, B, C)."""
    h, rate = model.normalize(x), model.spec.input_dropout  # (B, 784)
    start = 0
    if rate == 0.0:  # the first hidden layer is deterministic too: part of the prefix
        h, rate, start = model.hidden_layer(0, h), model.spec.hidden_dropout, 1  # (B, D)
    chunks = []
    chunk = passes_per_chunk(model, x.shape[0])
    for first in range(0, samples, chunk):
        passes = dropout(h, rate, masks, min(chunk, samples - first))  # (t, B, D)
        for index in range(start, len(model.hidden)):
            passes = dropout(model.hidden_layer(index, passes), model.spec.hidden_dropout, masks)
        chunks.append(model.output_layer(passes))  # (t, B, C)
    return chunks[0] if len(chunks) == 1 else torch.cat(chunks)


SAMPLERS: dict[str, Sampler] = {
    "shared_prefix": mc_dropout_logits,
    "replicate": replicate,
    "loop": loop,
    "torch_last_layer": torch_last_layer,
}


def time_call(model: DropoutMLP, x: Tensor, samples: int, sampler: Sampler, budget_s: float) -> float:
    """Median seconds of one call, repeating within about `budget_s`."""
    with torch.inference_mode():
        logits = sampler(model, x, samples, MaskSource(0))  # warm-up
        if logits.shape != (samples, x.shape[0], model.spec.num_classes):
            raise RuntimeError(f"a sampler returned logits of shape {tuple(logits.shape)}")
        return median_seconds(lambda n: sampler(model, x, samples, MaskSource(n)), budget_s, 3, 200)


def run(samples_list: tuple[int, ...], budget_s: float) -> list[dict[str, object]]:
    torch.set_num_threads(1)  # as the service runs
    rows: list[dict[str, object]] = []
    for (name, spec), batch in itertools.product(ARCHITECTURES.items(), BATCHES):
        model = DropoutMLP(spec).eval()
        x = torch.rand(batch, 784, generator=torch.Generator().manual_seed(0))
        for samples in samples_list:
            timings = {
                method: time_call(model, x, samples, sampler, budget_s)
                for method, sampler in SAMPLERS.items()
            }
            rows.append(
                {
                    "architecture": name,
                    "samples": samples,
                    "batch": batch,
                    "seconds": timings,
                    "speedup_vs_replicate": timings["replicate"] / timings["shared_prefix"],
                    "speedup_vs_loop": timings["loop"] / timings["shared_prefix"],
                    "speedup_vs_torch_last_layer": timings["torch_last_layer"] / timings["shared_prefix"],
                }
            )
            print(
                f"sampler {name} B={batch} T={samples}: "
                + ", ".join(f"{m} {t * 1e3:.3f} ms" for m, t in timings.items()),
                flush=True,
            )
    return rows
