"""Shared fixtures: a tiny model artifact in a temporary repository."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from models.artifact import save_artifact
from models.network import DropoutMLP
from models.spec import Calibration, Manifest, MLPSpec, Normalization

TINY_SPEC = MLPSpec(hidden_sizes=(16,), input_dropout=0.0, hidden_dropout=0.5)


def tiny_model(seed: int = 0, spec: MLPSpec = TINY_SPEC) -> DropoutMLP:
    torch.manual_seed(seed)
    return DropoutMLP(spec, Normalization()).eval()


def publish_tiny(root: Path, name: str = "mnist-mlp", seed: int = 0, threshold: float | None = 0.05) -> Path:
    manifest = Manifest(
        name=name,
        spec=TINY_SPEC,
        normalization=Normalization(),
        class_names=[str(d) for d in range(10)],
        calibration=Calibration(ood_threshold=threshold),
        metrics={"test_accuracy": 0.5},
    )
    return save_artifact(root, tiny_model(seed), manifest)


@pytest.fixture
def one_thread() -> Iterator[None]:
    """One torch intra-op thread, as the service runs (torch_threads=1): rows are batch-invariant."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    root = tmp_path / "artifacts"
    publish_tiny(root)
    return root
