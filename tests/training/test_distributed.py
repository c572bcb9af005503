"""torchrun with 2 CPU processes (gloo): sharded data, one artifact written by rank 0."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from models.artifact import load_artifact, scan_repository

pytestmark = pytest.mark.integration


def test_two_process_torchrun_trains_one_accurate_artifact(tmp_path):
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        "-m", "training", "--epochs", "2", "--artifacts", str(tmp_path),
        "--no-progress", "--mc-samples", "10",
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert scan_repository(tmp_path) == {"mnist-mlp": [1]}  # rank 1 published nothing
    loaded = load_artifact(tmp_path / "mnist-mlp" / "1")
    assert loaded.manifest.provenance["world_size"] == 2
    metrics = json.loads((tmp_path / "mnist-mlp" / "1" / "metrics.json").read_text())
    # Each rank saw half of every epoch; together one full pass per epoch.
    assert metrics["test"]["deterministic"]["accuracy"] > 0.94
