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


def replace_weights(path, data: bytes) -> None:
    """New weights bytes with the manifest's sha256 updated to match: only the content is wrong."""
    from models.artifact import sha256_file

    (path / "model.safetensors").write_bytes(data)
    manifest = json.loads((path / "model.json").read_text())
    manifest["weights"]["sha256"] = sha256_file(path / "model.safetensors")
    (path / "model.json").write_text(json.dumps(manifest))


def safetensors_bytes(tensors) -> bytes:
    from safetensors.torch import save

    return save(tensors)


def tiny_weights(**changes):
    weights = {k: v.clone() for k, v in tiny_model().state_dict().items()}
    weights.update(changes)
    return weights


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (lambda: b"\xff" * 8 + b"{not json", "safetensors"),  # a header length past the file
        (
            lambda: (40).to_bytes(8, "little") + b'{"a": {"dtype": "F32", "shape": [9' + b" " * 200,
            "safetensors",
        ),
        (lambda: b"", "safetensors"),
        (lambda: safetensors_bytes(tiny_weights())[:-64], "safetensors"),  # truncated data
        (lambda: safetensors_bytes({k: v.double() for k, v in tiny_weights().items()}), "float64"),
        (lambda: safetensors_bytes(tiny_weights(**{"output.weight": torch.zeros(10, 17)})), "shape"),
        (
            lambda: safetensors_bytes({k: v for k, v in tiny_weights().items() if k != "output.bias"}),
            "missing",
        ),
        (lambda: safetensors_bytes(tiny_weights(extra=torch.zeros(1))), "unexpected"),
        (lambda: safetensors_bytes(tiny_weights(**{"output.bias": torch.full((10,), float("nan"))})), "NaN"),
    ],
    ids=[
        "bad header",
        "header cut short",
        "empty",
        "truncated",
        "float64",
        "shape",
        "missing",
        "extra",
        "nan",
    ],
)
def test_weights_that_match_their_sha256_but_not_the_network_are_refused(tmp_path, content, expected):
    path = publish_tiny(tmp_path)
    replace_weights(path, content())
    with pytest.raises(ArtifactError, match=expected) as refused:
        load_artifact(path)
    assert str(path) in str(refused.value)


@pytest.mark.parametrize(
    "manifest",
    [
        "{not json",
        "[1, 2]",
        '"a string"',
        "\xff\xfe",
        '{"format_version": 2}',
        '{"format_version": 1}',
        '{"format_version": 1, "name": "x", "architecture": {"hidden_sizes": "abc"}}',
    ],
    ids=["not json", "a list", "a string", "not utf-8", "format 2", "no fields", "wrong types"],
)
def test_a_manifest_that_does_not_parse_is_refused(tmp_path, manifest):
    path = publish_tiny(tmp_path)
    (path / "model.json").write_bytes(manifest.encode("latin-1"))
    with pytest.raises(ArtifactError, match=r"model\.json"):
        load_artifact(path)


@pytest.mark.parametrize(
    "change",
    [
        {"architecture": {"hidden_sizes": [-1]}},
        {"architecture": {"hidden_dropout": 1.5}},
        {"architecture": {"activation": "softmax"}},
        {"class_names": ["only one"]},
        {"preprocessing": {"normalization": {"mean": 0.1, "std": 0}}},
    ],
    ids=["negative width", "dropout rate", "activation", "class names", "zero std"],
)
def test_a_manifest_with_invalid_values_is_refused(tmp_path, change):
    path = publish_tiny(tmp_path)
    manifest = json.loads((path / "model.json").read_text())
    for key, value in change.items():
        manifest[key] = {**manifest[key], **value} if isinstance(value, dict) else value
    (path / "model.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match=r"model\.json"):
        load_artifact(path)


def test_a_version_folder_copied_under_another_number_is_refused(tmp_path):
    import shutil

    path = publish_tiny(tmp_path)
    copy = shutil.copytree(path, path.parent / "5")
    with pytest.raises(ArtifactError, match="says mnist-mlp/1"):
        load_artifact(copy)
    renamed = shutil.copytree(path, tmp_path / "other-name" / "1")
    with pytest.raises(ArtifactError, match="says mnist-mlp/1"):
        load_artifact(renamed)
    assert load_artifact(path).manifest.version == 1  # the original still loads


def test_a_huge_declared_layer_is_refused_without_allocating_it(tmp_path):
    path = publish_tiny(tmp_path)
    manifest = json.loads((path / "model.json").read_text())
    manifest["architecture"]["hidden_sizes"] = [10**9]  # 784e9 float32 weights: 3 TB if built
    (path / "model.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="shape"):
        load_artifact(path)
