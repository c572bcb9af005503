"""The compiled parts of MC dropout (models/_kernels.c); arrays C-contiguous."""

import numpy as np

def philox(key: int, first_block: int, words: np.ndarray) -> None:
    """Fill words (uint8, whole blocks of 32 bytes) with the Philox4x64-10 stream keyed by `key`
    from block `first_block`, as numpy.random.Philox's random_raw."""

def masked_output(
    h: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray,
    logits: np.ndarray,
    scale: float,
    key: int,
    first_block: int,
    bits: int,
    threshold: int,
) -> None:
    """T passes of dropout and the output layer: h (B, D) shared by the passes or (T, B, D), weight
    (C, D), bias (C) float32 -> logits (T, B, C) float32, masks drawn from the Philox stream."""

def accumulate(logits: np.ndarray, state: np.ndarray, probs: np.ndarray) -> None:
    """Add passes' logits (t, B, C) float32 to state (B, 2 + 3C) float64, writing each pass's
    softmax into probs (t, B, C) float64."""

def finish(state: np.ndarray, stats: np.ndarray) -> None:
    """Per input [mean (C) | std (C) | predictive entropy | expected entropy | mutual information |
    variation ratio] into stats (B, 2C + 4) float64."""

def temper(p: np.ndarray, temperature: float, out: np.ndarray) -> None:
    """softmax(log p / temperature) of each row of p (B, C) float64 into out (B, C) float64."""
