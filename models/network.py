"""The dropout MLP. Dropout here is the training-time kind; MC sampling lives in mc_dropout."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from itertools import pairwise
from typing import cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.spec import MLPSpec, Normalization

# torch's own functions, not F.relu's Python wrapper: one call fewer per layer.
_ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {"relu": torch.relu, "gelu": F.gelu, "tanh": torch.tanh}


def normalize(x: Tensor, normalization: Normalization) -> Tensor:
    """(B, *input_shape) or (B, D) pixels in [0, 1] -> (B, D) normalized."""
    if x.dim() != 2:
        x = x.reshape(x.shape[0], -1)
    return (x - normalization.mean) / normalization.std


class DropoutMLP(nn.Module):
    """x in [0, 1] -> normalize -> [dropout -> Linear -> act] per hidden layer -> dropout -> Linear.

    Input dropout acts on the normalized pixels, hidden dropout after each hidden activation
    (Srivastava et al. 2014). Returns logits.
    """

    def __init__(self, spec: MLPSpec, normalization: Normalization | None = None) -> None:
        super().__init__()
        self.spec = spec
        self.normalization = normalization or Normalization()
        widths = (spec.input_size, *spec.hidden_sizes)
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in pairwise(widths))
        self.output = nn.Linear(widths[-1], spec.num_classes)
        self.activation = _ACTIVATIONS[spec.activation]

    def normalize(self, x: Tensor) -> Tensor:
        return normalize(x, self.normalization)

    def hidden_layer(self, index: int, h: Tensor) -> Tensor:
        """One hidden Linear + activation, no dropout: (..., D_in) -> (..., D_out)."""
        layer = cast(nn.Linear, self.hidden[index])
        return self.activation(F.linear(h, layer.weight, layer.bias))  # the module call, minus its hooks

    def output_layer(self, h: Tensor) -> Tensor:
        """The output Linear: (..., D) -> (..., C) logits."""
        return F.linear(h, self.output.weight, self.output.bias)

    def forward(self, x: Tensor) -> Tensor:
        h = self.normalize(x)  # (B, D)
        if self.training:
            h = F.dropout(h, self.spec.input_dropout)
        for index in range(len(self.hidden)):
            h = self.hidden_layer(index, h)
            if self.training:
                h = F.dropout(h, self.spec.hidden_dropout)
        return self.output_layer(h)  # (B, C)

    @torch.no_grad()
    def apply_max_norm(self) -> None:
        """Rescale each unit's incoming weight vector to norm <= max_norm (Srivastava et al.)."""
        if self.spec.max_norm is None:
            return
        for layer in (*self.hidden, self.output):
            norms = layer.weight.norm(dim=1, keepdim=True)  # (D_out, 1)
            layer.weight.mul_(torch.clamp(self.spec.max_norm / (norms + 1e-12), max=1.0))


@dataclass(frozen=True)
class Weights:
    """An eval-mode DropoutMLP as plain tensors, read out once: inference then makes no nn.Module
    attribute lookups, each a Python call on the request path (docs/performance.md). Shares the
    module's storage, so it sees the weights as they are; a model moved to another device needs a
    new one."""

    spec: MLPSpec
    normalization: Normalization
    activation: Callable[[Tensor], Tensor]
    hidden: tuple[tuple[Tensor, Tensor], ...]  # (weight (D_out, D_in), bias (D_out)) per hidden layer
    output: tuple[Tensor, Tensor]  # weight (C, D), bias (C)
    output_arrays: tuple[np.ndarray, np.ndarray]  # the same on the CPU, for the compiled last layer

    @classmethod
    def of(cls, model: DropoutMLP) -> Weights:
        layers = [cast(nn.Linear, layer) for layer in model.hidden]
        hidden = tuple((layer.weight.detach(), layer.bias.detach()) for layer in layers)
        output = (model.output.weight.detach(), model.output.bias.detach())
        return cls(
            model.spec,
            model.normalization,
            model.activation,
            hidden,
            output,
            (output[0].cpu().numpy(), output[1].cpu().numpy()),
        )

    def normalize(self, x: Tensor) -> Tensor:
        return normalize(x, self.normalization)

    def hidden_layer(self, index: int, h: Tensor) -> Tensor:
        """As `DropoutMLP.hidden_layer`: (..., D_in) -> (..., D_out)."""
        return self.activation(F.linear(h, *self.hidden[index]))
