"""Image rotation and the rotated-digit experiment."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import tiny_model
from training.rotation import ANGLES, first_index_of, rotate, rotation_experiment


def test_angles_are_twelve_steps_to_165_degrees():
    assert len(ANGLES) == 12 and ANGLES[0] == 0.0 and ANGLES[-1] == 165.0


def test_zero_rotation_is_the_identity():
    images = torch.rand(3, 784)
    assert torch.allclose(rotate(images, 0.0), images, atol=1e-5)


def test_quarter_turn_turns_clockwise_as_displayed():
    image = torch.zeros(28, 28)
    image[2:6, 10:18] = 1.0  # a bar near the top
    rotated = rotate(image[None], 90.0).reshape(28, 28)
    assert torch.allclose(rotated, torch.rot90(image, -1), atol=1e-5)  # the bar is now on the right


def test_first_index_of():
    assert first_index_of(torch.tensor([3, 1, 1]), 1) == 1
    with pytest.raises(ValueError, match="no input with label 7"):
        first_index_of(torch.tensor([3, 1]), 7)


def test_experiment_reports_every_angle_and_is_reproducible():
    model = tiny_model()
    x, y = torch.rand(20, 784), torch.arange(20) % 10
    first = rotation_experiment(model, x, y, population=10, samples=8, seed=3)
    assert first == rotation_experiment(model, x, y, population=10, samples=8, seed=3)
    digit, crowd = first["digit"], first["population"]
    assert digit["test_index"] == 1 and digit["true_label"] == 1
    for key in ("label", "confidence", "predictive_entropy", "mutual_information"):
        assert len(digit[key]) == 12
    assert crowd["n"] == 10 and all(0 <= a <= 1 for a in crowd["accuracy"])
