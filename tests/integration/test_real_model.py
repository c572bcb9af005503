"""Integration: a model trained on real MNIST, served over real HTTP, judged on real test digits."""

from __future__ import annotations

import io
import itertools
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from PIL import Image

from training.datasets import load_dataset

pytestmark = pytest.mark.integration
PNG = {"content-type": "image/png"}


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def mnist_test():
    splits = load_dataset("mnist")
    return splits.x_test, splits.y_test


def test_artifact_records_real_training(trained_repository):
    version = trained_repository / "mnist-mlp" / "1"
    manifest = json.loads((version / "model.json").read_text())
    metrics = json.loads((version / "metrics.json").read_text())
    assert manifest["provenance"]["dataset"] == "mnist"
    assert manifest["calibration"]["ood_threshold"] > 0
    assert metrics["test"]["n"] == 10_000
    assert metrics["test"]["deterministic"]["accuracy"] > 0.95
    assert metrics["train_seconds"] > 0


def test_png_predictions_over_http_are_at_least_95_percent_accurate(server_url, mnist_test):
    images, labels = mnist_test
    count, per_request = 2000, 100
    correct = 0
    with httpx.Client(base_url=server_url, timeout=60) as client:
        for start in range(0, count, per_request):
            files = [
                ("file", (f"{i}.png", png(images[i]), "image/png")) for i in range(start, start + per_request)
            ]
            response = client.post("/v1/predict", files=files)
            assert response.status_code == 200, response.text
            predicted = [p["label"] for p in response.json()["predictions"]]
            correct += int((np.array(predicted) == labels[start : start + per_request]).sum())
    assert correct / count >= 0.95


def test_uncertainty_over_http_is_reproducible_and_honest(server_url, mnist_test):
    images, labels = mnist_test
    with httpx.Client(base_url=server_url, timeout=60) as client:
        url = "/v1/uncertainty?samples=100&seed=1"
        first = client.post(url, content=png(images[0]), headers={"content-type": "image/png"})
        second = client.post(url, content=png(images[0]), headers={"content-type": "image/png"})
        assert first.status_code == 200 and first.content == second.content
        prediction = first.json()["predictions"][0]
        assert prediction["label"] == labels[0]
        assert sum(prediction["probabilities"]) == pytest.approx(1.0, abs=1e-5)
        assert prediction["mutual_information"] >= 0

        # Pure noise is far from the digits: more epistemic uncertainty than a clean test digit.
        noise = np.random.default_rng(0).integers(0, 256, (28, 28), dtype=np.uint8)
        noisy = client.post(url, content=png(noise), headers={"content-type": "image/png"}).json()
        assert noisy["predictions"][0]["mutual_information"] > prediction["mutual_information"]


def test_bad_input_never_takes_the_server_down(server_url):
    with httpx.Client(base_url=server_url, timeout=30) as client:
        bad = [
            client.post("/v1/predict", files={"file": ("x.txt", b"not an image", "text/plain")}),
            client.post(
                "/v1/predict", content=b"\x89PNG\r\n\x1a\n\x00\x00", headers={"content-type": "image/png"}
            ),
            client.post("/v1/predict", json={"instances": [[0.5] * 783]}),
            client.post("/v1/uncertainty", json={"instances": [[0.5] * 784], "samples": 0}),
            client.post("/v1/models/nope/predict", json={"instances": [[0.5] * 784]}),
        ]
        assert all(400 <= r.status_code < 500 for r in bad), [r.status_code for r in bad]
        assert all(set(r.json()) == {"error"} for r in bad)
        assert client.get("/healthz").status_code == 200
        assert client.post("/v1/predict", json={"instances": [[0.0] * 784]}).status_code == 200


def test_a_fixed_request_gets_the_same_bytes_alone_and_under_concurrent_load(server_url, mnist_test):
    images, _ = mnist_test
    fixed = png(images[0])
    routes = {"predict": "/v1/predict", "uncertainty": "/v1/uncertainty?samples=100&seed=42"}
    with httpx.Client(base_url=server_url, timeout=60) as client:
        alone = {name: client.post(url, content=fixed, headers=PNG).content for name, url in routes.items()}

    stop = threading.Event()
    crowd_statuses: list[int] = []

    def other_client(index: int) -> None:
        # 32 clients, each sending other digits, as PNG and JSON, to both routes, until told to stop.
        with httpx.Client(base_url=server_url, timeout=60) as client:
            for n in itertools.count():
                if stop.is_set():
                    return
                image = images[1 + (index * 7919 + n) % 5000]
                if n % 2:
                    response = client.post(routes["predict"], content=png(image), headers=PNG)
                else:
                    body = {"instances": [(image / 255.0).tolist()], "samples": 100, "seed": n}
                    response = client.post("/v1/uncertainty", json=body)
                crowd_statuses.append(response.status_code)

    with ThreadPoolExecutor(32) as crowd:
        for index in range(32):
            crowd.submit(other_client, index)
        time.sleep(1.0)  # the crowd is going
        with httpx.Client(base_url=server_url, timeout=60) as client:
            loaded = {
                name: [client.post(url, content=fixed, headers=PNG).content for _ in range(50)]
                for name, url in routes.items()
            }
        stop.set()
    for name, bodies in loaded.items():
        assert all(body == alone[name] for body in bodies), f"{name}: a body differed under load"
    # The crowd was served (a loaded machine may shed some of it with 503, never anything else).
    assert crowd_statuses.count(200) > 100 and set(crowd_statuses) <= {200, 503}


def test_prediction_sets_over_http_cover_real_test_digits(server_url, mnist_test, trained_repository):
    """The 99% sets, calibrated on validation digits, hold the true label of real test digits sent
    as PNGs (within sampling error), never empty; temperature scaling lowered the MC mean's ECE."""
    images, labels = mnist_test
    count, per_request = 1000, 100
    covered, sizes = 0, []
    with httpx.Client(base_url=server_url, timeout=60) as client:
        for start in range(0, count, per_request):
            files = [
                ("file", (f"{i}.png", png(images[i]), "image/png")) for i in range(start, start + per_request)
            ]
            response = client.post("/v1/uncertainty?samples=100&seed=0&coverage=0.99", files=files)
            assert response.status_code == 200, response.text
            for prediction, label in zip(response.json()["predictions"], labels[start:], strict=False):
                covered += int(label) in prediction["prediction_set"]
                sizes.append(len(prediction["prediction_set"]))
                assert isinstance(prediction["abstain"], bool) and prediction["coverage"] == 0.99
    assert covered / count >= 0.99 - 3 * (0.99 * 0.01 / count) ** 0.5
    assert min(sizes) >= 1 and np.mean(sizes) < 3
    metrics = json.loads((trained_repository / "mnist-mlp" / "1" / "metrics.json").read_text())
    assert metrics["calibration"]["test"]["after"]["ece"] < metrics["calibration"]["test"]["before"]["ece"]
