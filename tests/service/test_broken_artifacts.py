"""Broken versions in the repository never take the server down: each is refused with one log line
and every other version keeps serving, at start-up and at reload (which answers 200 per version)."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from fastapi.testclient import TestClient

from models.artifact import save_artifact
from models.network import DropoutMLP
from models.spec import Manifest, MLPSpec, Normalization
from service.http.app import create_app
from service.settings import Settings
from tests.conftest import publish_tiny
from tests.models.test_artifact import replace_weights, safetensors_bytes, tiny_weights

ADMIN_KEY = "admin-key-0123456789abcdef"
ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}
ONE = {"instances": [[0.5] * 784]}


def break_version(path: Path, how: str) -> None:
    if how == "corrupt header":  # the manifest's sha256 matches the corrupt file
        replace_weights(path, b"\xff" * 8 + b"{not json")
    elif how == "float64":
        replace_weights(path, safetensors_bytes({k: v.double() for k, v in tiny_weights().items()}))
    elif how == "manifest":
        (path / "model.json").write_text("[1, 2]")


def broken_repository(root: Path) -> Path:
    """mnist-mlp 1 good, 2 corrupt header, 3 float64, 4 bad manifest, 5 a copy of 1, 6 good;
    fashion-mlp 1 for other inputs. Serving: mnist-mlp 1 and 6."""
    for seed, how in enumerate(["good", "corrupt header", "float64", "manifest"]):
        break_version(publish_tiny(root, seed=seed), how)
    shutil.copytree(root / "mnist-mlp" / "1", root / "mnist-mlp" / "5")
    publish_tiny(root, seed=6)
    # A sound artifact of a network for 32x32 inputs: it could only fail at every request.
    spec = MLPSpec(input_shape=(1, 32, 32), hidden_sizes=(16,))
    manifest = Manifest("fashion-mlp", spec, Normalization(), [str(d) for d in range(10)])
    save_artifact(root, DropoutMLP(spec).eval(), manifest)
    return root


def skip_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "service.engine.registry" and r.levelno >= 40]


def test_start_up_serves_every_good_version_and_logs_each_broken_one_once(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    repository = broken_repository(tmp_path / "artifacts")
    with TestClient(create_app(Settings(model_repository=repository))) as client:
        assert client.get("/readyz").status_code == 200
        assert client.get("/v1/models").json()["models"] == [
            {"name": "mnist-mlp", "versions": [1, 6], "default_version": 6, "ready": True}
        ]
        assert client.post("/v1/predict", json=ONE).json()["model"]["version"] == 6
        pinned = client.post("/v1/models/mnist-mlp/versions/1/uncertainty", json=ONE)
        assert pinned.status_code == 200
        for version in (2, 3, 4, 5):
            refused = client.post(f"/v1/models/mnist-mlp/versions/{version}/predict", json=ONE)
            assert refused.status_code == 404, refused.text
        assert client.post("/v1/models/fashion-mlp/predict", json=ONE).status_code == 404
    lines = skip_lines(caplog)
    assert len(lines) == 5, lines
    for key, why in [
        ("mnist-mlp/2", "safetensors"),
        ("mnist-mlp/3", "float64"),
        ("mnist-mlp/4", "model.json"),
        ("mnist-mlp/5", "says mnist-mlp/1"),
        ("fashion-mlp/1", "this service feeds 784"),
    ]:
        (line,) = [line for line in lines if line.startswith(f"skipping {key}:")]
        assert why in line and "\n" not in line
    assert not [r for r in caplog.records if r.exc_info], "no traceback for a broken artifact"


def test_reload_answers_200_per_version_and_keeps_serving(tmp_path, caplog):
    repository = tmp_path / "artifacts"
    publish_tiny(repository)
    settings = Settings(model_repository=repository, admin_key=ADMIN_KEY)
    with TestClient(create_app(settings)) as client:
        broken = publish_tiny(repository, seed=1)
        break_version(broken, "corrupt header")
        shutil.copytree(repository / "mnist-mlp" / "1", repository / "mnist-mlp" / "3")
        caplog.set_level(logging.INFO)
        answer = client.post("/v1/models/mnist-mlp/reload", headers=ADMIN)
        assert answer.status_code == 200, answer.text
        versions = answer.json()["versions"]
        assert [(v["version"], v["status"]) for v in versions] == [(1, "kept"), (2, "failed"), (3, "failed")]
        assert "safetensors" in versions[1]["error"] and "says mnist-mlp/1" in versions[2]["error"]
        assert answer.json()["serving"] == [1]
        everything = client.post("/v1/admin/reload", headers=ADMIN)
        assert everything.status_code == 200
        assert set(everything.json()["failures"]) == {"mnist-mlp/2", "mnist-mlp/3"}
        assert client.post("/v1/predict", json=ONE).json()["model"]["version"] == 1
    assert len(skip_lines(caplog)) == 2, "each failure logged once, not again at the second reload"
