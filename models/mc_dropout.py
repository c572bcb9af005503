"""Monte-Carlo dropout: T stochastic passes of an eval-mode DropoutMLP.

The module stays in eval mode; dropout is applied functionally with masks from a `MaskSource`, so
concurrent requests never share random state. Everything before the first active dropout is
deterministic, so that prefix runs once per input and only the stochastic suffix is repeated T
times ("shared prefix"): for the seed model (784 -> 128 -> 10, dropout after the hidden layer) it
skips about 98% of the arithmetic at T = 100.

Reproducibility: masks come from one counter-based generator (Philox, numpy's stream) keyed by the
seed and drawn in an order fixed by the call's own shapes, and passes run in chunks whose size
depends only on the call's inputs. The last dropout and the output layer are one compiled call
(models/_kernels.c) that sums each logit in a fixed order; the layers before it are torch calls on
the request's own rows. So a call's arithmetic is a function of its inputs, seed and T alone; the
service runs each request as its own calls (service/engine), never as rows of another request's.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from models import _kernels
from models.network import DropoutMLP, Weights

# Passes run in chunks of at most this many activations (passes x inputs x widest layer): memory
# stays bounded at large T, and a chunk of the paper model (1024 wide) is a few tens of ms.
CHUNK_ELEMENTS = 1 << 20


Network = DropoutMLP | Weights
"""A module (training, tests) or its plain Weights (the service reads them out once, at load)."""


def weights_of(model: Network) -> Weights:
    return model if isinstance(model, Weights) else Weights.of(model)


class MaskSource:
    """The random source of one MC run: Philox4x64-10 (numpy.random.Philox's stream, computed in
    models/_kernels.c) keyed by `seed`. A draw is a function of (seed, position in the stream)
    alone: the same seed and the same sequence of draws give the same masks, on any CPU, for every
    dropout rate.

    A unit is dropped when its draw of b bits is below round(rate * 2^b), with b the fewest of 1, 8
    and 16 for which rate * 2^b is a whole number: exact for rates such as 1/2 or 1/4 (one bit per
    unit at the common 0.5, a sixteenth of the random stream), within 2^-17 of any other rate. Each
    draw starts at a fresh block of 256 bits; rate 0 draws nothing.
    """

    def __init__(self, seed: int) -> None:
        if not 0 <= seed < 2**64:
            raise ValueError(f"a mask seed is a 64-bit unsigned integer, not {seed}")
        self.seed = seed
        self._blocks = 0  # Philox blocks (4 words of 64 bits) drawn so far

    def draw(self, units: int, rate: float) -> tuple[int, int, int]:
        """Take the next draw of `units` units at `rate`: (its first Philox block, bits per unit,
        the threshold a unit's draw must reach to be kept); (block, 0, 0) at rate 0."""
        if rate == 0.0:
            return self._blocks, 0, 0
        bits = 1 if (rate * 2).is_integer() else 8 if (rate * 256).is_integer() else 16
        first = self._blocks
        self._blocks += -(-units * bits // 256)  # a block is 256 random bits
        return first, bits, round(rate * (1 << bits))

    def keep(self, shape: tuple[int, ...], rate: float) -> np.ndarray:
        """The next draw: bool of `shape`, True where a unit is kept (with probability 1 - rate)."""
        count = math.prod(shape)
        first, bits, threshold = self.draw(count, rate)
        if bits == 0:
            return np.ones(shape, dtype=bool)
        words = np.empty((self._blocks - first) * 32, dtype=np.uint8)  # the blocks just taken
        _kernels.philox(self.seed, first, words)
        if bits == 1:  # 1 kept, 0 dropped
            kept = np.unpackbits(words, count=count, bitorder="little").view(bool)
        else:
            draws: np.ndarray = words.view(np.uint8 if bits == 8 else np.uint16)[:count]
            kept = draws >= threshold
        return kept.reshape(shape)


def dropout(h: Tensor, rate: float, masks: MaskSource, copies: int | None = None) -> Tensor:
    """Inverted dropout of h (..., D) with the next mask of `masks`; identity when rate is 0. With
    `copies`, h (B, D) -> (copies, B, D): a mask per copy, h broadcast, never copied."""
    shape = tuple(h.shape) if copies is None else (copies, *h.shape)
    if rate == 0.0:
        return h if copies is None else h.expand(shape)
    scale = masks.keep(shape, rate).astype(np.float32)  # 1.0 kept, 0.0 dropped
    scale *= np.float32(1.0 / (1.0 - rate))
    mask = torch.from_numpy(scale)
    return h * (mask if h.is_cpu else mask.to(h.device))


def predict_logits(model: Network, x: Tensor) -> Tensor:
    """The eval-mode forward (no dropout): (B, ...) pixels in [0, 1] -> (B, C) logits. The same
    calls as model(x) in eval mode."""
    w = weights_of(model)
    h = w.normalize(x)
    for index in range(len(w.hidden)):
        h = w.hidden_layer(index, h)
    return F.linear(h, *w.output)


def mc_dropout_logits(model: Network, x: Tensor, samples: int, masks: MaskSource) -> Tensor:
    """T stochastic passes: (B, ...) pixels in [0, 1] -> (T, B, C) logits."""
    chunks = list(mc_dropout_chunks(model, x, samples, masks))
    return torch.from_numpy(chunks[0] if len(chunks) == 1 else np.concatenate(chunks))


def mc_dropout_chunks(model: Network, x: Tensor, samples: int, masks: MaskSource) -> Iterator[np.ndarray]:
    """`mc_dropout_logits` chunk by chunk, (t, B, C) float32 arrays: a caller may stop between chunks."""
    if samples < 1:
        raise ValueError("samples must be at least 1")
    w = weights_of(model)
    prefix, start, rate = _deterministic_prefix(w, x)  # (B, D)
    chunk = passes_per_chunk(w, x.shape[0])
    for first in range(0, samples, chunk):
        yield _passes(w, prefix, start, rate, min(chunk, samples - first), masks)


def passes_per_chunk(model: Network, rows: int) -> int:
    """How many passes of `rows` inputs `mc_dropout_chunks` runs at a time: the widest activation
    they repeat (the pixels too when there is input dropout) bounds the chunk's memory."""
    spec = model.spec
    widest = max(*spec.hidden_sizes, spec.input_size if spec.input_dropout > 0 else 0)
    return max(1, CHUNK_ELEMENTS // (rows * widest))


def _deterministic_prefix(w: Weights, x: Tensor) -> tuple[Tensor, int, float]:
    """Compute up to the first active dropout: (activation (B, D), next hidden layer, its rate)."""
    h = w.normalize(x)  # (B, 784)
    if w.spec.input_dropout > 0.0:
        return h, 0, w.spec.input_dropout
    # No input dropout: the first hidden layer is deterministic too.
    return w.hidden_layer(0, h), 1, w.spec.hidden_dropout


def _passes(
    w: Weights, prefix: Tensor, start: int, rate: float, copies: int, masks: MaskSource
) -> np.ndarray:
    """`copies` passes on from the prefix (B, D): dropout at `rate`, then hidden layers from `start`,
    each followed by hidden dropout, then the output layer: (copies, B, C)."""
    h = prefix  # (B, D), shared by the passes until a hidden layer runs on their own masks
    for index in range(start, len(w.hidden)):
        h = w.hidden_layer(index, dropout(h, rate, masks, copies if h.dim() == 2 else None))
        rate = w.spec.hidden_dropout
    return _output_with_dropout(w, h, rate, masks, copies)


def _output_with_dropout(w: Weights, h: Tensor, rate: float, masks: MaskSource, copies: int) -> np.ndarray:
    """The last dropout and the output layer in one compiled call that draws its own masks (the same
    draw as `dropout`): h (B, D), shared by the passes, or (copies, B, D) -> (copies, B, C) logits
    on the CPU. A logit sums the kept units' products in a fixed order (models/_kernels.c), so a
    pass's answer does not depend on the rows beside it or on the BLAS."""
    rows, width = h.shape[-2:]
    first, bits, threshold = masks.draw(copies * rows * width, rate)
    logits = np.empty((copies, rows, w.spec.num_classes), np.float32)
    h_array = (h if h.is_cpu else h.cpu()).numpy()
    scale = 1.0 / (1.0 - rate)
    _kernels.masked_output(h_array, *w.output_arrays, logits, scale, masks.seed, first, bits, threshold)
    return logits
