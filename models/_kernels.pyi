"""The uncertainty statistics of MC-dropout passes (models/_kernels.c); arrays C-contiguous."""

import numpy as np

def accumulate(logits: np.ndarray, state: np.ndarray, probs: np.ndarray) -> None:
    """Add passes' logits (t, B, C) float32 to state (B, 2 + 3C) float64, writing each pass's
    softmax into probs (t, B, C) float64."""

def finish(state: np.ndarray, stats: np.ndarray) -> None:
    """Per input [mean (C) | std (C) | predictive entropy | expected entropy | mutual information |
    variation ratio] into stats (B, 2C + 4) float64."""
