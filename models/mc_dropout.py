"""Monte-Carlo dropout: T stochastic passes of an eval-mode DropoutMLP.

Dropout is applied functionally with masks from an explicit `MaskGenerator`, so the module never leaves
eval mode and concurrent requests never share random state. Everything before the first active
dropout is deterministic, so by default that prefix runs once per input and only the stochastic
suffix is replicated T times ("shared prefix"); for the seed model (784 -> 128 -> 10, dropout after
the hidden layer) this skips about 98% of the arithmetic at T = 100.
"""

from __future__ import annotations

import hashlib
import math
import secrets
from collections.abc import Callable, Sequence
from functools import partial
from typing import Literal, cast

import numpy as np
import torch
from torch import Tensor

from models import _kernels
from models.frozen import FrozenMLP, freeze, without_grad
from models.network import DropoutMLP

Method = Literal["shared_prefix", "replicate", "loop"]

# Upper bound on elements in one replicated activation (T_chunk * B * width): bounds memory at
# large T by processing passes in chunks (each chunk is its own draw of masks).
_CHUNK_ELEMENTS = 1 << 22

# Passes per chunk in `mc_dropout_logits_segments`. Fixed, not derived from the batch, so that a
# segment draws its masks in the same calls whatever else shares the batch; bounds memory to
# _SEGMENT_PASSES * B * width activations.
_SEGMENT_PASSES = 128


class MaskGenerator:
    """The random source of one MC run, seeded once: the same seed, the same masks.

    Rate-0.5 dropout (every recipe's hidden dropout) needs one fair coin per unit: each draw takes
    them from SHAKE-128 output keyed by the seed and the draw's index, one short C call that keeps
    the GIL. Under load the inference thread shares the GIL with the event loop, and each call that
    releases it waits to take it back: with a torch draw per request, a micro-batch of 32 spent
    25 ms against 18 ms now, next to a busy Python thread, for 2 ms of work alone. Other rates draw
    `torch.rand` from a torch generator with the same seed, created on first use.
    """

    def __init__(self, seed: int, device: torch.device | str = "cpu") -> None:
        self.seed = seed
        self.device = device  # as given: only `uniform` needs it, and most runs never call it
        self._coin_draws = 0
        self._uniform: torch.Generator | None = None

    def coin_bytes(self, rows: int, width: int) -> np.ndarray:
        """The next draw of rows x width coins as (rows, ceil(width / 8)) bytes, coin j of a row at
        bit j % 8 of byte j // 8."""
        row_bytes = -(-width // 8)
        key = b"dropserve-coins:%d:%d" % (self.seed, self._coin_draws)
        self._coin_draws += 1
        coins = hashlib.shake_128(key).digest(rows * row_bytes)
        return np.frombuffer(coins, dtype=np.uint8).reshape(rows, row_bytes)

    def uniform(self, shape: Sequence[int]) -> Tensor:
        """The next uniform [0, 1) draws of `shape`, on the generator's device."""
        if self._uniform is None:
            self._uniform = torch.Generator(device=self.device).manual_seed(self.seed)
        return torch.rand(tuple(shape), generator=self._uniform, device=self.device)


def dropout_with_generator(h: Tensor, rate: float, generator: MaskGenerator | None) -> Tensor:
    """Inverted dropout drawing its mask from `generator` (a fresh one when None), row by row
    along the last dim; identity when rate == 0."""
    return _segment_dropout(h, rate, [generator], [h.shape[-2]])


# Byte -> its 8 coins as float32 0.0 / 1.0, coin j at bit j: one table lookup per byte makes the
# float mask in one pass, where unpacking to bits and then casting takes two (16 images, T = 100:
# 51 against 65 us with the product by h).
_BYTE_COINS = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1, bitorder="little").astype(
    np.float32
)  # (256, 8)


def _coin_octets(
    shape: Sequence[int], generators: Sequence[MaskGenerator], sizes: Sequence[int]
) -> np.ndarray:
    """The coin bytes of rate-0.5 masks of `shape` (..., B, D): (..., B, ceil(D / 8)) uint8, coin j
    of a row at bit j % 8 of byte j // 8. Segment i (sizes[i] consecutive rows of axis -2) draws
    its (..., sizes[i], D) coins from generators[i] alone, in row-major order."""
    width, lead = shape[-1], shape[:-2]
    if len(generators) == 1:
        return generators[0].coin_bytes(math.prod(shape[:-1]), width).reshape(*shape[:-1], -1)
    per_segment = [
        g.coin_bytes(math.prod(lead) * n, width).reshape(*lead, n, -1)
        for g, n in zip(generators, sizes, strict=True)
    ]
    return np.concatenate(per_segment, axis=-2)


def _unpacked(octets: np.ndarray, width: int) -> np.ndarray:
    """Coin bytes (..., ceil(width / 8)) -> their first `width` coins as float32 1.0 / 0.0."""
    coins = np.take(_BYTE_COINS, octets, axis=0).reshape(*octets.shape[:-1], -1)  # (..., 8 * bytes)
    return coins if coins.shape[-1] == width else coins[..., :width]


def _coins(shape: torch.Size, generators: Sequence[MaskGenerator], sizes: Sequence[int]) -> np.ndarray:
    """Rate-0.5 dropout's coins for `shape` (..., B, D): float32 1.0 where a unit is kept, 0.0
    where it is dropped; segments as in `_coin_octets`."""
    return _unpacked(_coin_octets(shape, generators, sizes), shape[-1])


def _uniform(shape: torch.Size, generators: Sequence[MaskGenerator], sizes: Sequence[int]) -> Tensor:
    """Uniform [0, 1) draws for masks of `shape` (..., B, D), on the generators' device; segments as
    in `_coin_octets`."""
    width, lead = shape[-1], shape[:-2]
    draws = [g.uniform((*lead, n, width)) for g, n in zip(generators, sizes, strict=True)]
    return draws[0] if len(draws) == 1 else torch.cat(draws, dim=-2)


def _inverted_mask(
    shape: torch.Size, rate: float, generators: Sequence[MaskGenerator], sizes: Sequence[int], like: Tensor
) -> Tensor:
    """The inverted-dropout mask of `shape` (..., B, D): 1/keep where a unit is kept, 0 where it is
    dropped, in like's dtype and device; segments as in `_coin_octets`."""
    if rate == 0.5:
        return torch.from_numpy(_coins(shape, generators, sizes)).to(like.device, like.dtype) * 2.0
    keep = 1.0 - rate
    uniform = _uniform(shape, generators, sizes).to(like.device)
    return torch.where(uniform < keep, 1.0 / keep, 0.0).to(like.dtype)


def _kept_by_input(
    copies: int, h: Tensor, rate: float, generators: Sequence[MaskGenerator], sizes: Sequence[int]
) -> Tensor:
    """The units that each of `copies` passes keeps of h (B, D): (B, copies, D), 1.0 kept and 0.0
    dropped, in h's dtype and device. The same coins as `_inverted_mask` of (copies, B, D) draws,
    laid out input by input."""
    shape = torch.Size((copies, *h.shape))
    if rate == 0.5:
        octets = _coin_octets(shape, generators, sizes).swapaxes(0, 1)  # (B, copies, bytes), a view
        return torch.from_numpy(_unpacked(octets, h.shape[-1])).to(h.device, h.dtype)
    return (_uniform(shape, generators, sizes).transpose(0, 1) < 1.0 - rate).to(h.device, h.dtype)


Dropout = Callable[[Tensor, float], Tensor]
"""(activation, rate) -> the activation with dropout applied, from some source of masks."""


def _stochastic_suffix(model: FrozenMLP, h: Tensor, start: int, dropout: Dropout) -> Tensor:
    """Run hidden layers from `start` on, each followed by dropout, then the output: (..., C)."""
    for index in range(start, len(model.hidden)):
        h = dropout(model.hidden_layer(index, h), model.spec.hidden_dropout)
    return model.output(h)


def _deterministic_prefix(model: FrozenMLP, x: Tensor) -> tuple[Tensor, int, float]:
    """Compute up to the first active dropout: (activation (max(B, MIN_BATCH_ROWS), D), rows past
    B padding; next hidden index; its rate). The padding stays for the caller to cut where it is
    cheapest (in numpy, a tenth of torch's microsecond)."""
    h = model.normalized_rows(x)  # (max(B, MIN_BATCH_ROWS), 784)
    if model.spec.input_dropout > 0.0:
        return h, 0, model.spec.input_dropout
    # No input dropout: the first hidden layer is deterministic too (with no hidden dropout, the
    # whole network is, and the "dropout" after it is the identity).
    return model.hidden_layer(0, h), 1, model.spec.hidden_dropout


def mc_dropout_logits(
    model: DropoutMLP | FrozenMLP,
    x: Tensor,
    samples: int,
    generator: MaskGenerator | None = None,
    method: Method = "shared_prefix",
) -> Tensor:
    """T stochastic forward passes: x (B, ...) in [0, 1] -> logits (T, B, C).

    "shared_prefix" replicates only the activation at the first dropout; "replicate" copies the
    whole input T times (as baal does); "loop" runs T separate passes. shared_prefix and replicate
    draw the same masks in the same order, so they give the same samples (when the passes fit one
    chunk of `_CHUNK_ELEMENTS`), to float rounding: where the only active dropout precedes the
    output layer, shared_prefix folds it into that layer (`_dropout_then_output`); the loop draws
    its masks pass by pass, so its samples have the same distribution but not the same values. All
    three run the same `FrozenMLP` layers.
    """
    if samples < 1:
        raise ValueError("samples must be at least 1")
    model, x = freeze(model), without_grad(x)
    if method == "loop":
        return torch.stack([_one_pass(model, x, generator) for _ in range(samples)])
    if method == "replicate":
        replicated = x.reshape(1, x.shape[0], -1).expand(samples, -1, -1)  # (T, B, D)
        return _one_pass(model, replicated.reshape(-1, replicated.shape[-1]), generator).reshape(
            samples, x.shape[0], -1
        )
    prefix, start, rate = _deterministic_prefix(model, x)  # (max(B, MIN_BATCH_ROWS), D)
    rows = x.shape[0]
    chunk = max(1, _CHUNK_ELEMENTS // max(1, rows * prefix.shape[1]))
    return _in_chunks(partial(_passes, model, prefix, start, rate, [generator], [rows]), samples, chunk)


def _one_pass(model: FrozenMLP, x: Tensor, generator: MaskGenerator | None) -> Tensor:
    """A full stochastic pass with every dropout active: (N, ...) -> (N, C)."""
    dropout = partial(dropout_with_generator, generator=generator)
    return _stochastic_suffix(model, dropout(model.normalize(x), model.spec.input_dropout), 0, dropout)


def mc_dropout_logits_segments(
    model: DropoutMLP | FrozenMLP,
    x: Tensor,
    samples: int,
    generators: Sequence[MaskGenerator | None],
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
    model = freeze(model)
    prefix, start, rate = _deterministic_prefix(model, without_grad(x))  # (max(B, MIN_BATCH_ROWS), D)
    passes = partial(_passes, model, prefix, start, rate, generators, sizes)
    return _in_chunks(passes, samples, _SEGMENT_PASSES)


def _in_chunks(passes: Callable[[int], Tensor], samples: int, chunk: int) -> Tensor:
    """`passes(n)` ((n, B, C) logits, a fresh draw of masks each call) for `samples` passes, in
    chunks of at most `chunk`: (samples, B, C)."""
    if samples <= chunk:  # the usual case: no list, no concatenation
        return passes(samples)
    return torch.cat([passes(min(chunk, samples - first)) for first in range(0, samples, chunk)])


def _passes(
    model: FrozenMLP,
    prefix: Tensor,
    start: int,
    rate: float,
    generators: Sequence[MaskGenerator | None],
    sizes: Sequence[int],
    copies: int,
) -> Tensor:
    """`copies` stochastic passes on from the deterministic prefix, B = sum(sizes) rows of it (the
    rest padding), whose next layer is hidden layer `start` after dropout at `rate`: logits
    (copies, B, C), segments as in `_segment_dropout`."""
    if start == len(model.hidden) and rate > 0.0:  # that dropout is the only stochastic step
        return _dropout_then_output(model, prefix, rate, _sources(generators, prefix.device), sizes, copies)
    h = _segment_dropout(prefix[: sum(sizes)], rate, generators, sizes, copies=copies)  # (copies, B, D)
    return _stochastic_suffix(model, h, start, partial(_segment_dropout, generators=generators, sizes=sizes))


def _dropout_then_output(
    model: FrozenMLP,
    h: Tensor,
    rate: float,
    generators: Sequence[MaskGenerator],
    sizes: Sequence[int],
    copies: int,
) -> Tensor:
    """Dropout of h's first B = sum(sizes) rows (B, D), the last hidden activation, in `copies`
    passes, then the output layer: logits (copies, B, C).

    The output layer is linear: a pass's logits (m * h / keep) W + b, for its 0/1 mask m, are
    m (diag(h / keep) W) + b. So each input's output weights are scaled by its activation once,
    and the passes multiply bare masks by them: the (copies, B, D) dropped activations are never
    made. The masks are `_segment_dropout`'s; the logits equal its path's to float rounding
    (products added in another order). On a CPU at rate 0.5 (every recipe) this is one call of the
    compiled `masked_output`, one loop per input, so a row's bits do not depend on its batch. In a
    server at one connection (T = 100, one image) that took 17 us past drawing the coins, against
    34 for the ten numpy calls it replaced. Elsewhere torch's batched product.
    """
    rows, width = sum(sizes), h.shape[1]
    if rate == 0.5 and h.is_cpu and h.dtype == torch.float32:
        weight, bias = model.output.numpy_rows  # (C, D), (C,)
        octets = _coin_octets((copies, rows, width), generators, sizes)  # (copies, B, bytes)
        logits = np.empty((rows, weight.shape[0], copies), dtype=np.float32)  # (B, C, copies)
        _kernels.masked_output(h.numpy()[:rows], weight, bias, octets, logits)
        return torch.from_numpy(logits.transpose(2, 0, 1))  # (copies, B, C), a view
    h = h[:rows]
    kept = _kept_by_input(copies, h, rate, generators, sizes)  # (B, copies, D)
    scaled = h.unsqueeze(-1) * (model.output.weight_t / (1.0 - rate))  # (B, D, C)
    return torch.baddbmm(model.output.bias, kept, scaled).transpose(0, 1)  # (copies, B, C)


def _segment_dropout(
    h: Tensor,
    rate: float,
    generators: Sequence[MaskGenerator | None],
    sizes: Sequence[int],
    copies: int | None = None,
) -> Tensor:
    """Inverted dropout on h (..., B, D), with segment i's masks (..., sizes[i], D) from
    generators[i] (a fresh generator for None). With `copies`, h is (B, D) and the result
    (copies, B, D): a mask for each copy, and no copy of h made before it is multiplied."""
    shape = h.shape if copies is None else torch.Size((copies, *h.shape))
    if rate == 0.0:
        return h if copies is None else h.expand(shape)
    sources = _sources(generators, h.device)
    if rate == 0.5 and h.is_cpu and h.dtype == torch.float32:
        # h * mask in numpy as coin * 2h, the same products (doubling is exact): at one image a
        # numpy call costs a microsecond against several for torch's, and this makes three fewer.
        kept = _coins(shape, sources, sizes)
        return torch.from_numpy(np.multiply(kept, h.numpy() * 2, out=kept))  # h broadcast
    return h * _inverted_mask(shape, rate, sources, sizes, h)


def _sources(generators: Sequence[MaskGenerator | None], device: torch.device) -> Sequence[MaskGenerator]:
    """The generators, a fresh one in place of each None."""
    if None not in generators:
        return cast(Sequence[MaskGenerator], generators)
    return [g if g is not None else MaskGenerator(secrets.randbits(63), device) for g in generators]


def mc_dropout_probabilities(
    model: DropoutMLP | FrozenMLP,
    x: Tensor,
    samples: int,
    generator: MaskGenerator | None = None,
    method: Method = "shared_prefix",
) -> Tensor:
    """Softmax of `mc_dropout_logits`: (T, B, C), each row summing to 1."""
    return torch.softmax(mc_dropout_logits(model, x, samples, generator, method), dim=-1)


def deterministic_probabilities(model: DropoutMLP | FrozenMLP, x: Tensor) -> Tensor:
    """The eval-mode prediction (no dropout): (B, ...) -> (B, C); a row's answer does not depend
    on the batch around it."""
    return torch.softmax(freeze(model).logits(without_grad(x)), dim=-1)


def generator_for(seed: int, device: torch.device | str = "cpu") -> MaskGenerator:
    """A fresh generator: the same seed always yields the same passes."""
    return MaskGenerator(seed, device)
