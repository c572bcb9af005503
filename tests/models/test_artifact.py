import json

import pytest
import torch

from models.artifact import ArtifactError, list_versions, load_artifact, scan_repository
from models.mc_dropout import predict_logits
from tests.conftest import publish_tiny, tiny_model


def test_round_trip_rebuilds_the_same_network(tmp_path):
    path = publish_tiny(tmp_path, seed=3)
    loaded = load_artifact(path)
    x = torch.rand(5, 784)
    assert torch.allclose(predict_logits(loaded.model, x), predict_logits(tiny_model(3), x))
    assert not loaded.model.training
    assert loaded.manifest.version == 1
    assert loaded.manifest.spec.hidden_sizes == (16,)
    assert loaded.manifest.calibration.ood_threshold == 0.05


def test_versions_increase_and_scan_lists_them(tmp_path):
    publish_tiny(tmp_path)
    second = publish_tiny(tmp_path)
    assert second.name == "2"
    assert list_versions(tmp_path / "mnist-mlp") == [1, 2]
    assert scan_repository(tmp_path) == {"mnist-mlp": [1, 2]}


def test_tampered_weights_are_refused(tmp_path):
    path = publish_tiny(tmp_path)
    weights = path / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="sha256"):
        load_artifact(path)


def test_manifest_without_matching_architecture_is_refused(tmp_path):
    path = publish_tiny(tmp_path)
    manifest = json.loads((path / "model.json").read_text())
    manifest["architecture"]["hidden_sizes"] = [32]
    (path / "model.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="architecture"):
        load_artifact(path)


def test_half_written_versions_are_invisible(tmp_path):
    publish_tiny(tmp_path)
    (tmp_path / "mnist-mlp" / ".tmp-abc").mkdir()  # a writer that died mid-way
    assert scan_repository(tmp_path) == {"mnist-mlp": [1]}


def test_failed_write_leaves_nothing_behind(tmp_path):
    class Boom(Exception):
        pass

    from models import artifact

    original = artifact.write_json

    def failing(*args, **kwargs):
        raise Boom

    artifact.write_json = failing
    try:
        with pytest.raises(Boom):
            publish_tiny(tmp_path)
    finally:
        artifact.write_json = original
    assert list((tmp_path / "mnist-mlp").iterdir()) == []
