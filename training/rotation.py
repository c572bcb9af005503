"""The rotated-digit experiment of Gal & Ghahramani 2016 (Figure 4): rotate a test digit in 12
steps up to 165 degrees and watch the prediction and its uncertainty as it leaves the training
distribution."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from models.mc_dropout import MaskSource, mc_dropout_logits
from models.network import DropoutMLP
from training.evaluate import summarize_passes

ANGLES = tuple(15.0 * step for step in range(12))  # 0, 15, ..., 165 degrees


def rotate(images: Tensor, degrees: float) -> Tensor:
    """Rotate square images clockwise as displayed (row 0 at the top) about their centre;
    bilinear, with zero (ink-free) fill.

    images (N, 784) or (N, 28, 28) in [0, 1] -> (N, 784).
    """
    side = math.isqrt(images[0].numel())
    x = images.reshape(-1, 1, side, side)  # (N, 1, H, W)
    radians = math.radians(degrees)
    cos, sin = math.cos(radians), math.sin(radians)
    # affine_grid maps output coordinates to input ones, so the inverse rotation goes here.
    theta = torch.tensor([[cos, sin, 0.0], [-sin, cos, 0.0]], dtype=x.dtype, device=x.device)
    grid = F.affine_grid(theta.expand(len(x), 2, 3), list(x.shape), align_corners=False)
    rotated = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return rotated.reshape(len(x), -1).clamp(0.0, 1.0)


def first_index_of(labels: Tensor, label: int) -> int:
    """Index of the first input with `label` (the experiment's digit)."""
    matches = (labels == label).nonzero()
    if len(matches) == 0:
        raise ValueError(f"no input with label {label}")
    return int(matches[0].item())


def rotation_experiment(
    model: DropoutMLP,
    x_test: Tensor,  # (N, 784) in [0, 1]
    y_test: Tensor,  # (N,)
    digit_label: int = 1,
    population: int = 200,
    samples: int = 100,
    seed: int = 0,
    angles: tuple[float, ...] = ANGLES,
) -> dict[str, Any]:
    """Per angle, MC-dropout label, confidence, predictive entropy and mutual information for the
    first test image of `digit_label` (the paper used a 1), and the same averaged over the first
    `population` test images with their accuracy."""
    index = first_index_of(y_test, digit_label)
    crowd_x, crowd_y = x_test[:population], y_test[:population]
    masks = MaskSource(seed)
    digit: dict[str, list[float | int]] = {
        key: [] for key in ("label", "confidence", "predictive_entropy", "mutual_information")
    }
    crowd: dict[str, list[float]] = {
        key: [] for key in ("accuracy", "mean_predictive_entropy", "mean_mutual_information")
    }
    for angle in angles:
        one = summarize_passes(
            mc_dropout_logits(model, rotate(x_test[index : index + 1], angle), samples, masks)
        )
        label = int(one.mean_probabilities[0].argmax())
        digit["label"].append(label)
        digit["confidence"].append(float(one.mean_probabilities[0, label]))
        digit["predictive_entropy"].append(float(one.predictive_entropy[0]))
        digit["mutual_information"].append(float(one.mutual_information[0]))
        many = summarize_passes(mc_dropout_logits(model, rotate(crowd_x, angle), samples, masks))
        correct = many.mean_probabilities.argmax(-1) == crowd_y.numpy(force=True)
        crowd["accuracy"].append(float(correct.mean()))
        crowd["mean_predictive_entropy"].append(float(many.predictive_entropy.mean()))
        crowd["mean_mutual_information"].append(float(many.mutual_information.mean()))
    return {
        "angles": list(angles),
        "samples": samples,
        "digit": {"test_index": index, "true_label": digit_label, **digit},
        "population": {"n": len(crowd_y), **crowd},
    }
