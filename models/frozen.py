"""A DropoutMLP's eval-mode arithmetic, snapshotted and laid out for inference.

Each Linear keeps its weight transposed, (D_in, D_out) and contiguous, and runs as one `addmm`. In
that layout MKL (torch's CPU BLAS) gives a row the same bits whatever the number of rows around it,
from 2 rows up: measured to 12,800 rows for layers up to 128 wide (the seed model's), and below 192
rows for 1,024-wide ones. nn.Linear's (D_out, D_in) layout changes kernels, and a row's rounding,
at 6 rows for the 10-class output and at 16 for the 128-unit layer, so a served answer changed with
its micro-batch. A few rows also run faster: a 4-row 784 -> 128 layer takes ~9 us against ~18,
2 rows (the padding of one image) ~5.5 us.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import cast

import numpy as np
import torch
from torch import Tensor, nn

from models.network import DropoutMLP, normalize
from models.spec import MLPSpec, Normalization

# BLAS takes another kernel for a single row, which rounds differently: every Linear runs on at
# least this many rows, zero rows appended to a smaller input.
MIN_BATCH_ROWS = 2


def pad_rows(flat: Tensor) -> Tensor:
    """(N, D) -> (max(N, MIN_BATCH_ROWS), D), zero rows appended."""
    if len(flat) >= MIN_BATCH_ROWS:
        return flat
    return torch.cat([flat, flat.new_zeros(MIN_BATCH_ROWS - len(flat), flat.shape[1])])


def without_grad(x: Tensor) -> Tensor:
    """x cut from autograd. A FrozenMLP's tensors never require grad, so on such an input its
    arithmetic records no graph, without entering inference mode (a microsecond a call)."""
    return x.detach() if x.requires_grad else x


@dataclass(frozen=True)
class FrozenLinear:
    """h W^T + b, with W^T stored: a copy, unchanged by later training of the layer."""

    weight_t: Tensor  # (D_in, D_out), contiguous
    bias: Tensor  # (D_out,)

    @classmethod
    def of(cls, layer: nn.Linear) -> FrozenLinear:
        return cls(layer.weight.detach().t().contiguous(), layer.bias.detach().clone())

    @cached_property
    def numpy_rows(self) -> tuple[np.ndarray, np.ndarray]:
        """(W (D_out, D_in), b (D_out,)) as contiguous numpy arrays, made on first use, for the
        compiled kernels on a CPU model."""
        return np.ascontiguousarray(self.weight_t.numpy().T), np.ascontiguousarray(self.bias.numpy())

    def __call__(self, h: Tensor) -> Tensor:
        """(..., D_in) -> (..., D_out), on at least MIN_BATCH_ROWS rows (a row rounds the same in
        any batch)."""
        if h.dim() == 2 and h.shape[0] >= MIN_BATCH_ROWS:
            return torch.addmm(self.bias, h, self.weight_t)
        flat = h.reshape(-1, h.shape[-1])  # (N, D_in)
        if len(flat) >= MIN_BATCH_ROWS:  # no padding, no slice: ~2 us of a one-image MC call
            return torch.addmm(self.bias, flat, self.weight_t).reshape(*h.shape[:-1], -1)
        out = torch.addmm(self.bias, pad_rows(flat), self.weight_t)[: len(flat)]
        return out.reshape(*h.shape[:-1], -1)


@dataclass(frozen=True)
class FrozenMLP:
    """What inference needs of a DropoutMLP (weights, normalization, activation, dropout rates);
    no module calls, no autograd."""

    spec: MLPSpec
    normalization: Normalization
    hidden: tuple[FrozenLinear, ...]
    output: FrozenLinear
    activation: Callable[[Tensor], Tensor]

    @property
    def device(self) -> torch.device:
        return self.output.bias.device

    def normalize(self, x: Tensor) -> Tensor:
        """(B, ...) pixels in [0, 1] -> (B, D) normalized."""
        return normalize(x, self.normalization)

    def normalized_rows(self, x: Tensor) -> Tensor:
        """x (B, ...) in [0, 1] -> normalized (max(B, MIN_BATCH_ROWS), D), rows past B zeros: a
        small batch is padded once, not at every layer. On CPU float32 in numpy, the same bits as
        `normalize` (one correctly rounded subtraction and division per pixel) in two calls of a
        microsecond each where torch's cost five to ten."""
        if not x.is_cpu or x.dtype != torch.float32 or x.requires_grad:
            return pad_rows(self.normalize(x))
        pixels = x.numpy().reshape(x.shape[0], -1)  # (B, D)
        rows = pixels.shape[0]
        padded = np.zeros((max(rows, MIN_BATCH_ROWS), pixels.shape[1]), dtype=np.float32)
        real = padded[:rows]
        np.subtract(pixels, self.normalization.mean, out=real)
        np.divide(real, self.normalization.std, out=real)
        return torch.from_numpy(padded)

    def hidden_layer(self, index: int, h: Tensor) -> Tensor:
        """One hidden Linear + activation, no dropout: (..., D_in) -> (..., D_out)."""
        return self.activation(self.hidden[index](h))

    def logits(self, x: Tensor) -> Tensor:
        """The eval-mode forward (no dropout): (B, ...) in [0, 1] -> (B, C)."""
        h = self.normalized_rows(x)  # (max(B, MIN_BATCH_ROWS), D)
        for index in range(len(self.hidden)):
            h = self.hidden_layer(index, h)
        return self.output(h)[: x.shape[0]]


def freeze(model: DropoutMLP | FrozenMLP) -> FrozenMLP:
    """A snapshot of `model`'s current weights for inference (a FrozenMLP is returned as is)."""
    if isinstance(model, FrozenMLP):
        return model
    return FrozenMLP(
        spec=model.spec,
        normalization=model.normalization,
        hidden=tuple(FrozenLinear.of(cast(nn.Linear, layer)) for layer in model.hidden),
        output=FrozenLinear.of(model.output),
        activation=model.activation,
    )
