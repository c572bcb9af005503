"""Reloads: new versions served without a restart, per-version results, failures that leave the
others serving, requests in flight finishing on their version, polling."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from models.artifact import WEIGHTS_FILE
from service.http.app import create_app
from service.settings import Settings
from tests.conftest import publish_tiny
from tests.service.test_metrics import scrape, value

ADMIN_KEY = "admin-key-0123456789abcdef"
ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}
ONE = {"instances": [[0.5] * 784]}


@pytest.fixture
def admin_client(repository: Path):
    # A generous queue-wait bound: a stall of the test machine must not turn the slow request below
    # into a 503 before it starts.
    settings = Settings(
        model_repository=repository, admin_key=ADMIN_KEY, mc_samples_max=1_000_000, queue_max_wait_ms=30_000
    )
    with TestClient(create_app(settings)) as client:
        yield client


def version_of(response) -> int:
    assert response.status_code == 200, response.text
    return response.json()["model"]["version"]


def break_weights(version_dir: Path) -> None:
    """Flip a byte of the weights: the manifest's sha256 no longer matches."""
    weights = version_dir / WEIGHTS_FILE
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))


def test_reload_serves_a_new_version_and_reports_each(admin_client, repository):
    assert version_of(admin_client.post("/v1/predict", json=ONE)) == 1
    publish_tiny(repository, seed=1)
    assert version_of(admin_client.post("/v1/predict", json=ONE)) == 1  # not before the reload

    answer = admin_client.post("/v1/models/mnist-mlp/reload", headers=ADMIN)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {
        "name": "mnist-mlp",
        "versions": [{"version": 1, "status": "kept"}, {"version": 2, "status": "loaded"}],
        "serving": [1, 2],
        "default_version": 2,
    }
    assert version_of(admin_client.post("/v1/predict", json=ONE)) == 2
    assert version_of(admin_client.post("/v1/models/mnist-mlp/versions/1/predict", json=ONE)) == 1
    assert admin_client.get("/v1/models").json()["models"][0]["versions"] == [1, 2]


def test_a_version_that_fails_to_load_leaves_the_others_serving(admin_client, repository):
    break_weights(publish_tiny(repository, seed=1))
    answer = admin_client.post("/v1/models/mnist-mlp/reload", headers=ADMIN).json()
    kept, failed = answer["versions"]
    assert kept == {"version": 1, "status": "kept"}
    assert failed["version"] == 2 and failed["status"] == "failed" and "sha256" in failed["error"]
    assert answer["serving"] == [1] and answer["default_version"] == 1
    assert version_of(admin_client.post("/v1/predict", json=ONE)) == 1

    everything = admin_client.post("/v1/admin/reload", headers=ADMIN).json()
    assert everything["models"] == {"mnist-mlp": [1]}
    assert "sha256" in everything["failures"]["mnist-mlp/2"]
    assert everything["results"][0]["versions"][1]["status"] == "failed"


def test_a_removed_version_is_dropped(admin_client, repository):
    second = publish_tiny(repository, seed=1)
    admin_client.post("/v1/models/mnist-mlp/reload", headers=ADMIN)
    second.rename(second.parent / ".removed")
    answer = admin_client.post("/v1/models/mnist-mlp/reload", headers=ADMIN).json()
    assert answer["versions"] == [{"version": 1, "status": "kept"}, {"version": 2, "status": "removed"}]
    assert version_of(admin_client.post("/v1/predict", json=ONE)) == 1


def test_a_new_model_is_loaded_by_name(admin_client, repository):
    publish_tiny(repository, name="fashion-mlp")
    answer = admin_client.post("/v1/models/fashion-mlp/reload", headers=ADMIN).json()
    assert answer["versions"] == [{"version": 1, "status": "loaded"}]
    response = admin_client.post("/v1/models/fashion-mlp/predict", json=ONE)
    assert response.json()["model"] == {"name": "fashion-mlp", "version": 1}


@pytest.mark.parametrize("name", ["nope", "..", ".hidden", "%00", "a%2Fb", "mnist-mlp%2F1"])
def test_reloading_what_is_not_a_model_is_404(admin_client, name):
    response = admin_client.post(f"/v1/models/{name}/reload", headers=ADMIN)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_reload_needs_the_admin_key(admin_client, repository):
    assert admin_client.post("/v1/models/mnist-mlp/reload").status_code == 401
    wrong = {"authorization": "Bearer wrong-key-0123456789abcdef"}
    assert admin_client.post("/v1/models/mnist-mlp/reload", headers=wrong).status_code == 401
    with TestClient(create_app(Settings(model_repository=repository))) as client:
        disabled = client.post("/v1/models/mnist-mlp/reload", headers=ADMIN)
    assert disabled.status_code == 404
    assert "DROPSERVE_ADMIN_KEY" in disabled.json()["error"]["message"]


def test_a_request_in_flight_finishes_on_the_version_it_started_with(admin_client, repository):
    engine = admin_client.app.state.serving.engine
    answers: list = []
    slow = {"instances": [[0.5] * 784] * 32, "samples": 1_000_000, "seed": 1}  # several seconds
    worker = threading.Thread(target=lambda: answers.append(admin_client.post("/v1/uncertainty", json=slow)))
    worker.start()
    deadline = time.monotonic() + 10
    while engine.scheduler.jobs == 0 and worker.is_alive() and time.monotonic() < deadline:
        time.sleep(0.001)  # until it holds version 1
    assert worker.is_alive(), f"the slow request ended before the reload: {answers[0].text[:300]}"
    publish_tiny(repository, seed=1)
    assert admin_client.post("/v1/models/mnist-mlp/reload", headers=ADMIN).json()["default_version"] == 2
    assert version_of(admin_client.post("/v1/predict", json=ONE)) == 2
    assert worker.is_alive(), "the slow request should still be computing"
    worker.join()
    assert version_of(answers[0]) == 1


def test_model_info_follows_reloads(admin_client, repository):
    publish_tiny(repository, seed=1)
    admin_client.post("/v1/models/mnist-mlp/reload", headers=ADMIN)
    info = scrape(admin_client)["dropserve_model_info"]
    assert sorted(dict(labels)["version"] for labels, v in info.items() if v == 1) == ["1", "2"]
    (repository / "mnist-mlp" / "1").rename(repository / "mnist-mlp" / ".old")
    admin_client.post("/v1/models/mnist-mlp/reload", headers=ADMIN)
    info = scrape(admin_client)["dropserve_model_info"]
    assert {dict(labels)["version"]: v for labels, v in info.items()} == {"1": 0, "2": 1}


def test_polling_serves_new_versions(repository):
    settings = Settings(model_repository=repository, poll_interval_s=0.05)
    with TestClient(create_app(settings)) as client:
        publish_tiny(repository, seed=1)
        deadline = time.monotonic() + 10
        while version_of(client.post("/v1/predict", json=ONE)) != 2:
            assert time.monotonic() < deadline, "the poll did not pick up version 2"
            time.sleep(0.05)
        samples = scrape(client)
    assert (
        value(
            samples,
            "dropserve_requests_total",
            route="/v1/predict",
            method="POST",
            model="mnist-mlp",
            status="200",
        )
        >= 2
    )


def test_a_vanished_repository_keeps_what_is_served(admin_client, repository):
    # An unmounted volume or a mistyped move must not unload every model: the reload says what is
    # wrong (503), the versions held keep answering, and once the folder is back reloads work again.
    moved = repository.with_name("moved-away")
    repository.rename(moved)
    try:
        for route in ("/v1/admin/reload", "/v1/models/mnist-mlp/reload"):
            refused = admin_client.post(route, headers=ADMIN)
            assert refused.status_code == 503 and refused.headers["retry-after"]
            assert "is not a readable folder" in refused.json()["error"]["message"]
        assert version_of(admin_client.post("/v1/predict", json=ONE)) == 1
    finally:
        moved.rename(repository)
    publish_tiny(repository, seed=1)
    assert admin_client.post("/v1/admin/reload", headers=ADMIN).status_code == 200
    assert version_of(admin_client.post("/v1/predict", json=ONE)) == 2


def test_an_unreadable_repository_is_503_not_500(admin_client, monkeypatch):
    def unreadable(root: Path) -> dict[str, list[int]]:
        raise PermissionError(13, "Permission denied", str(root))  # as a non-root user would see

    monkeypatch.setattr("service.engine.registry.scan_repository", unreadable)
    refused = admin_client.post("/v1/admin/reload", headers=ADMIN)
    assert refused.status_code == 503 and "is not a readable folder" in refused.json()["error"]["message"]
    assert version_of(admin_client.post("/v1/predict", json=ONE)) == 1


def test_polling_keeps_what_is_served_while_the_repository_is_gone(repository, caplog):
    settings = Settings(model_repository=repository, poll_interval_s=0.05)
    with TestClient(create_app(settings)) as client:
        moved = repository.with_name("moved-away")
        repository.rename(moved)
        try:
            time.sleep(0.3)  # several polls
            assert version_of(client.post("/v1/predict", json=ONE)) == 1
        finally:
            moved.rename(repository)
    assert "is not a readable folder" in caplog.text
