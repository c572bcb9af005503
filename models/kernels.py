"""Compiled loops (numba) for the MC path: the first hidden layer of the shared prefix, and the
statistics of the passes' logits.

Each is one call where arrays would take several (a torch call costs five to ten microseconds,
a numpy call one or two, and in the server each runs on caches the rest of the request has
cooled), and each input is a fixed loop of its own, so its result is the same bits whatever
shares its batch: no padding to a BLAS kernel's row count is needed.
"""

from __future__ import annotations

import math

import numba
import numpy as np

ACTIVATIONS = ("relu", "gelu", "tanh")  # the codes `dense_layer` takes, in order


@numba.njit(cache=False)  # numba's on-disk cache is pickled: compiled at start-up instead
def dense_layer(
    x: np.ndarray,
    mean: float,
    std: float,
    weight_t: np.ndarray,
    bias: np.ndarray,
    activation: int,
    out: np.ndarray,
) -> None:
    """out = act(((x - mean) / std) W^T + b) for pixels x (B, D_in) float32, weight_t (D_in, D_out),
    out (B, D_out); float32 throughout, as the torch path: normalized as numpy does, then each
    row's products added in input order. For one image ~8 us where normalize + addmm + act take
    ~20; for 64 rows ~4x MKL's time, a few percent of an MC batch's."""
    rows, width = x.shape
    mean32, std32 = np.float32(mean), np.float32(std)
    for b in range(rows):
        out[b, :] = bias
        for k in range(width):
            pixel = (x[b, k] - mean32) / std32
            for j in range(out.shape[1]):  # vectorized: no sum across lanes
                out[b, j] += pixel * weight_t[k, j]
        for j in range(out.shape[1]):
            value = out[b, j]
            if activation == 0:
                out[b, j] = max(value, np.float32(0.0))
            elif activation == 1:
                out[b, j] = np.float32(0.5 * value * (1.0 + math.erf(value / math.sqrt(2.0))))
            else:
                out[b, j] = np.float32(math.tanh(value))


@numba.njit(cache=False)
def summarize_passes(
    logits: np.ndarray,
    probs: np.ndarray,
    mean: np.ndarray,
    std: np.ndarray,
    total: np.ndarray,
    aleatoric: np.ndarray,
    information: np.ndarray,
    variation: np.ndarray,
) -> None:
    """logits (T, B, C) -> probs (T, B, C), softmax in float64, and per input b: mean[b] and
    std[b] (C,) of the passes' probabilities, total[b] = H[mean], aleatoric[b] = mean of the
    passes' entropies, information[b] = total - aleatoric clamped at 0, variation[b] =
    1 - (passes voting for the modal class) / T, a pass voting for its first largest logit."""
    samples, inputs, classes = logits.shape
    votes = np.zeros(classes, np.int64)
    for b in range(inputs):
        votes[:] = 0
        mean[b, :] = 0.0
        entropies = 0.0
        for t in range(samples):
            top, peak = 0, float(logits[t, b, 0])
            for c in range(1, classes):
                if float(logits[t, b, c]) > peak:
                    top, peak = c, float(logits[t, b, c])
            votes[top] += 1
            normalizer = 0.0
            for c in range(classes):
                probs[t, b, c] = math.exp(float(logits[t, b, c]) - peak)  # exp cannot overflow
                normalizer += probs[t, b, c]
            # the pass's entropy -sum p log p, with log p = z - log(normalizer) and sum p = 1
            p_z = 0.0
            for c in range(classes):
                probs[t, b, c] /= normalizer
                p_z += probs[t, b, c] * (float(logits[t, b, c]) - peak)
                mean[b, c] += probs[t, b, c]
            entropies += math.log(normalizer) - p_z
        mean[b, :] /= samples
        entropy_of_mean = 0.0
        for c in range(classes):
            spread = 0.0
            for t in range(samples):
                spread += (probs[t, b, c] - mean[b, c]) ** 2
            std[b, c] = math.sqrt(spread / samples)
            if mean[b, c] > 0.0:
                entropy_of_mean -= mean[b, c] * math.log(mean[b, c])
        total[b] = entropy_of_mean
        aleatoric[b] = entropies / samples
        information[b] = max(entropy_of_mean - aleatoric[b], 0.0)
        variation[b] = 1.0 - votes.max() / samples


def warm_up() -> None:
    """Compile the kernels for float32 inputs now (about two seconds), not in a request."""
    x, weight_t, bias = np.zeros((1, 2), np.float32), np.zeros((2, 2), np.float32), np.zeros(2, np.float32)
    dense_layer(x, 0.0, 1.0, weight_t, bias, 0, np.empty((1, 2), np.float32))
    logits = np.zeros((1, 1, 2), dtype=np.float32)
    mean, std = np.empty((2, 1, 2))
    total, aleatoric, information, variation = np.empty((4, 1))
    summarize_passes(logits, np.empty((1, 1, 2)), mean, std, total, aleatoric, information, variation)
