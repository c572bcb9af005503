"""Compiled kernels of the MC-dropout hot path (models/_kernels.c); arrays C-contiguous."""

import numpy as np

def masked_output(
    h: np.ndarray, weight: np.ndarray, bias: np.ndarray, octets: np.ndarray, out: np.ndarray
) -> None:
    """Rate-0.5 dropout of h (B, D) float32 in T passes, coins from octets (T, B, ceil(D / 8))
    uint8, then the output layer weight (C, D), bias (C,): logits into out (B, C, T) float32."""

def summarize(logits: np.ndarray, probs: np.ndarray, stats: np.ndarray) -> None:
    """Each pass's softmax of logits (B, C, T) float32 into probs (B, C, T) float64, and per input
    [mean (C) | std (C) | predictive entropy | expected entropy | mutual information | variation
    ratio] into stats (B, 2C + 4) float64."""
