"""Monte-Carlo dropout: T stochastic passes of an eval-mode DropoutMLP.

Dropout is applied functionally with an explicit `torch.Generator`, so the module never leaves
eval mode and concurrent requests never share random state. Everything before the first active
dropout is deterministic, so by default that prefix runs once per input and only the stochastic
suffix is replicated T times ("shared prefix"); for the seed model (784 -> 128 -> 10, dropout after
the hidden layer) this skips about 98% of the arithmetic at T = 100.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from models.network import DropoutMLP

Method = Literal["shared_prefix", "replicate", "loop"]

# Upper bound on elements in one replicated activation (T_chunk * B * width): bounds memory at
# large T by processing passes in chunks; the generator is consumed in the same order either way.
_CHUNK_ELEMENTS = 1 << 22

# Passes per chunk in `mc_dropout_logits_segments`. Fixed, not derived from the batch, so that a
# segment draws its masks in the same calls whatever else shares the batch; bounds memory to
# _SEGMENT_PASSES * B * width activations.
_SEGMENT_PASSES = 128

# BLAS takes other kernels for matrices of 1-3 rows, which round differently; running every Linear
# on at least this many rows keeps each row's result independent of the batch around it (with one
# torch intra-op thread, as the service runs).
MIN_BATCH_ROWS = 4


def dropout_with_generator(h: Tensor, rate: float, generator: torch.Generator | None) -> Tensor:
    """Inverted dropout drawing its mask from `generator`; identity when rate == 0."""
    if rate == 0.0:
        return h
    keep = 1.0 - rate
    return h * _scaled_mask(_draw(h.shape, keep, generator, h), keep, h.shape[-1], h)


# A fair coin per unit needs one random bit: rate 0.5 (every recipe's hidden dropout) takes 63
# bits from each 64-bit draw (randint below 2**63 - 1), about 4x faster than bernoulli_, which
# profiling showed to be most of the shared-prefix sampler's time.
_COIN_BITS = 63


def _draw(shape: torch.Size, keep: float, generator: torch.Generator | None, like: Tensor) -> Tensor:
    """The random numbers behind a mask of `shape`, drawn row by row along the last dim, so every
    method (and each request of a micro-batch) consumes the generator in the same order."""
    if keep != 0.5:
        return torch.rand(shape, generator=generator, device=like.device)
    words = -(-shape[-1] // _COIN_BITS)
    return torch.randint(0, 2**63 - 1, (*shape[:-1], words), generator=generator, device=like.device)


def _scaled_mask(draws: Tensor, keep: float, width: int, like: Tensor) -> Tensor:
    """Draws (from one or several generators, concatenated) -> the inverted-dropout mask: 1/keep
    where a unit is kept, 0 where it is dropped, in like's dtype, (..., width)."""
    if keep != 0.5:
        return torch.where(draws < keep, 1.0 / keep, 0.0).to(like.dtype)
    if draws.device.type == "cpu" and like.dtype in _NUMPY_FLOATS:
        return torch.from_numpy(coin_bits_numpy(draws, width) * _NUMPY_FLOATS[like.dtype](1.0 / keep))
    return coin_bits(draws, width).to(like.dtype) * (1.0 / keep)


_NUMPY_FLOATS: dict[torch.dtype, type[np.floating[Any]]] = {
    torch.float32: np.float32,
    torch.float64: np.float64,
}


def coin_bits(words: Tensor, width: int) -> Tensor:
    """63-bit words (..., W) -> their bits (..., width), bit i of word w at w * 63 + i."""
    bits = (words.unsqueeze(-1) >> torch.arange(_COIN_BITS, device=words.device)) & 1  # (..., W, 63)
    return bits.flatten(-2)[..., :width]


def coin_bits_numpy(words: Tensor, width: int) -> np.ndarray:
    """`coin_bits` of CPU words as uint8 through numpy's table-driven unpackbits: torch's
    broadcast shift took 19 ms for a micro-batch of 64 requests at T = 100, this 0.3 ms."""
    octets = words.numpy().astype("<i8", copy=False).view(np.uint8).reshape(*words.shape, 8)
    bits = np.unpackbits(octets, axis=-1, count=_COIN_BITS, bitorder="little")  # (..., W, 63)
    return bits.reshape(*words.shape[:-1], -1)[..., :width]


def _at_least_rows(layer: Callable[[Tensor], Tensor], h: Tensor) -> Tensor:
    """layer(h) for h (..., D), run on at least MIN_BATCH_ROWS rows: zero rows are appended to
    small inputs and their outputs dropped, so a row rounds the same in any batch."""
    flat = h.reshape(-1, h.shape[-1])  # (N, D)
    rows = flat.shape[0]
    if rows >= MIN_BATCH_ROWS:
        return layer(h)
    padded = torch.cat([flat, flat.new_zeros(MIN_BATCH_ROWS - rows, flat.shape[1])])
    out = layer(padded)[:rows]  # (N, D_out)
    return out.reshape(*h.shape[:-1], out.shape[-1])


Dropout = Callable[[Tensor, float], Tensor]
"""(activation, rate) -> the activation with dropout applied, from some source of masks."""


def _stochastic_suffix(model: DropoutMLP, h: Tensor, start: int, dropout: Dropout) -> Tensor:
    """Run hidden layers from `start` on, each followed by dropout, then the output: (..., C)."""
    for index in range(start, len(model.hidden)):
        h = _at_least_rows(partial(model.hidden_layer, index), h)
        h = dropout(h, model.spec.hidden_dropout)
    return _at_least_rows(model.output, h)


def _deterministic_prefix(model: DropoutMLP, x: Tensor) -> tuple[Tensor, int, float]:
    """Compute up to the first active dropout: (activation (B, D), next hidden index, its rate)."""
    h = model.normalize(x)  # (B, 784)
    if model.spec.input_dropout > 0.0:
        return h, 0, model.spec.input_dropout
    # No input dropout: the first hidden layer is deterministic too. With no hidden dropout the
    # whole network is, and the "dropout" below is the identity.
    return _at_least_rows(partial(model.hidden_layer, 0), h), 1, model.spec.hidden_dropout


def mc_dropout_logits(
    model: DropoutMLP,
    x: Tensor,
    samples: int,
    generator: torch.Generator | None = None,
    method: Method = "shared_prefix",
) -> Tensor:
    """T stochastic forward passes: x (B, ...) in [0, 1] -> logits (T, B, C).

    "shared_prefix" replicates only the activation at the first dropout; "replicate" copies the
    whole input T times (as baal does); "loop" runs T separate passes. shared_prefix and replicate
    draw the same masks in the same order, so they give identical samples (when the passes fit one
    chunk of `_CHUNK_ELEMENTS`); the loop draws them pass by pass, identical with one dropout
    layer and the same distribution with several.
    """
    if samples < 1:
        raise ValueError("samples must be at least 1")
    with torch.inference_mode():
        if method == "loop":
            return torch.stack([_one_pass(model, x, generator) for _ in range(samples)])
        if method == "replicate":
            replicated = x.reshape(1, x.shape[0], -1).expand(samples, -1, -1)  # (T, B, D)
            return _one_pass(model, replicated.reshape(-1, replicated.shape[-1]), generator).reshape(
                samples, x.shape[0], -1
            )
        dropout = partial(dropout_with_generator, generator=generator)
        prefix, start, rate = _deterministic_prefix(model, x)  # (B, D)
        chunk = max(1, _CHUNK_ELEMENTS // max(1, prefix.numel()))
        outputs = []
        for first in range(0, samples, chunk):
            count = min(chunk, samples - first)
            h = prefix.unsqueeze(0).expand(count, -1, -1)  # (T_chunk, B, D)
            h = dropout(h, rate)
            outputs.append(_stochastic_suffix(model, h, start, dropout))  # (T_chunk, B, C)
        return outputs[0] if len(outputs) == 1 else torch.cat(outputs)


def _one_pass(model: DropoutMLP, x: Tensor, generator: torch.Generator | None) -> Tensor:
    """A full stochastic pass with every dropout active: (N, ...) -> (N, C)."""
    dropout = partial(dropout_with_generator, generator=generator)
    return _stochastic_suffix(model, dropout(model.normalize(x), model.spec.input_dropout), 0, dropout)


def mc_dropout_logits_segments(
    model: DropoutMLP,
    x: Tensor,
    samples: int,
    generators: Sequence[torch.Generator | None],
    sizes: Sequence[int],
) -> Tensor:
    """Shared-prefix passes over a batch made of segments, each with its own generator: (T, B, C).

    x (B, ...) holds len(sizes) consecutive segments (one per request in a micro-batch). Segment i
    draws every mask from generators[i] alone, in an order fixed by the segment itself (chunks of
    _SEGMENT_PASSES passes, dropout layer by dropout layer), so a request's samples do not depend on
    what else is in the batch. With one segment and T <= _SEGMENT_PASSES it equals
    `mc_dropout_logits(..., method="shared_prefix")`.
    """
    if samples < 1:
        raise ValueError("samples must be at least 1")
    if len(generators) != len(sizes) or sum(sizes) != x.shape[0]:
        raise ValueError("one generator per segment, and the segment sizes must add up to the batch")
    with torch.inference_mode():
        dropout = partial(_segment_dropout, generators=generators, sizes=sizes)
        prefix, start, rate = _deterministic_prefix(model, x)  # (B, D)
        outputs = []
        for first in range(0, samples, _SEGMENT_PASSES):
            count = min(_SEGMENT_PASSES, samples - first)
            h = prefix.unsqueeze(0).expand(count, -1, -1)  # (T_chunk, B, D)
            outputs.append(_stochastic_suffix(model, dropout(h, rate), start, dropout))  # (T_chunk, B, C)
        return outputs[0] if len(outputs) == 1 else torch.cat(outputs)


def _segment_dropout(
    h: Tensor, rate: float, generators: Sequence[torch.Generator | None], sizes: Sequence[int]
) -> Tensor:
    """Inverted dropout on (T, B, D) with segment i's masks (T, sizes[i], D) from generators[i]."""
    if rate == 0.0:
        return h
    if len(sizes) == 1:
        return dropout_with_generator(h, rate, generators[0])
    keep = 1.0 - rate
    count, _, width = h.shape
    draws = [_draw(torch.Size((count, n, width)), keep, g, h) for g, n in zip(generators, sizes, strict=True)]
    return h * _scaled_mask(torch.cat(draws, dim=1), keep, width, h)


def mc_dropout_probabilities(
    model: DropoutMLP,
    x: Tensor,
    samples: int,
    generator: torch.Generator | None = None,
    method: Method = "shared_prefix",
) -> Tensor:
    """Softmax of `mc_dropout_logits`: (T, B, C), each row summing to 1."""
    return torch.softmax(mc_dropout_logits(model, x, samples, generator, method), dim=-1)


def deterministic_probabilities(model: DropoutMLP, x: Tensor) -> Tensor:
    """The eval-mode prediction (no dropout): (B, ...) -> (B, C); a row's answer does not depend
    on the batch around it."""
    with torch.inference_mode():
        return torch.softmax(_at_least_rows(model, x.reshape(x.shape[0], -1)), dim=-1)


def generator_for(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A fresh generator: the same seed always yields the same passes."""
    return torch.Generator(device=device).manual_seed(seed)
