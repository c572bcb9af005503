"""The `coverage` option of the uncertainty routes: prediction sets, abstain, temperature, refusals."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from models.artifact import save_artifact
from models.calibration import apply_temperature
from models.conformal import prediction_sets
from models.spec import Abstention, Calibration, Conformal, ConformalLevel, Manifest, Normalization
from service.http.app import create_app
from service.settings import Settings
from tests.conftest import TINY_SPEC, publish_tiny, tiny_model
from tests.service.test_api import assert_error

TEMPERATURE = 0.5
LEVELS = (
    ConformalLevel(0.9, quantile=0.0),  # every label scores above 0: the top label alone
    ConformalLevel(0.99, quantile=0.6, penalty=0.01, penalty_from_rank=1),
    ConformalLevel(0.999, quantile=None),  # too few calibration inputs: every label
)
ABSTAIN_ABOVE = 0.1  # predictive entropy, nats


def publish_calibrated(root: Path) -> None:
    manifest = Manifest(
        name="calibrated",
        spec=TINY_SPEC,
        normalization=Normalization(),
        class_names=[f"class-{d}" for d in range(10)],
        calibration=Calibration(ood_threshold=0.05, temperature=TEMPERATURE),
        conformal=Conformal(method="raps", samples=100, calibration_size=8000, levels=LEVELS),
        abstention=Abstention("predictive_entropy", ABSTAIN_ABOVE, 0.005, 0.004, 0.9, 100),
    )
    save_artifact(root, tiny_model(3), manifest)


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    root = tmp_path / "artifacts"
    publish_tiny(root)  # mnist-mlp: an older manifest, with neither sets nor temperature
    publish_calibrated(root)
    with TestClient(create_app(Settings(model_repository=root, max_instances=8))) as test_client:
        yield test_client


def instances(count: int = 3) -> list[list[float]]:
    return np.random.default_rng(0).random((count, 784)).round(3).tolist()


URL = "/v1/models/calibrated/uncertainty"


def test_coverage_adds_sets_names_level_and_abstain(client):
    body = {"instances": instances(), "samples": 30, "seed": 4, "return_samples": True}
    for level, expected in ((0.9, lambda p: [int(np.argmax(p))]), (0.999, lambda p: list(range(10)))):
        response = client.post(URL, json={**body, "coverage": level})
        assert response.status_code == 200, response.text
        for prediction in response.json()["predictions"]:
            assert prediction["prediction_set"] == expected(prediction["probabilities"])
            assert prediction["prediction_set_names"] == [f"class-{c}" for c in prediction["prediction_set"]]
            assert prediction["coverage"] == level
            assert prediction["abstain"] == (prediction["predictive_entropy"] > ABSTAIN_ABOVE)


def test_sets_are_the_models_function_of_the_answers_probabilities(client):
    response = client.post(URL, json={"instances": instances(8), "samples": 20, "seed": 1, "coverage": 0.99})
    predictions = response.json()["predictions"]
    probabilities = np.array([p["probabilities"] for p in predictions])
    members = prediction_sets(probabilities, LEVELS[1])
    assert [p["prediction_set"] for p in predictions] == [np.flatnonzero(m).tolist() for m in members]
    assert all(len(p["prediction_set"]) >= 1 for p in predictions)


def test_probabilities_are_the_temperature_scaled_mc_mean(client):
    response = client.post(
        URL, json={"instances": instances(), "samples": 40, "seed": 2, "return_samples": True}
    )
    for prediction in response.json()["predictions"]:
        mean = np.array(prediction["sample_probabilities"]).mean(0, keepdims=True)
        np.testing.assert_allclose(
            prediction["probabilities"], apply_temperature(mean, TEMPERATURE)[0], rtol=1e-9
        )
        assert prediction["confidence"] == max(prediction["probabilities"])
        assert prediction["label"] == int(np.argmax(prediction["probabilities"]))
        assert "prediction_set" not in prediction and "abstain" not in prediction  # only with coverage


def test_coverage_as_a_query_parameter_for_image_bodies(client, digit_png):
    response = client.post(
        f"{URL}?coverage=0.999&seed=3", content=digit_png, headers={"content-type": "image/png"}
    )
    assert response.status_code == 200, response.text
    (prediction,) = response.json()["predictions"]
    assert prediction["prediction_set"] == list(range(10)) and prediction["coverage"] == 0.999


def test_same_seed_and_coverage_same_bytes(client):
    body = {"instances": instances(), "samples": 25, "seed": 9, "coverage": 0.99}
    assert client.post(URL, json=body).content == client.post(URL, json=body).content


@pytest.mark.parametrize("coverage", [0.95, 0.5, "0.95"])
def test_an_uncalibrated_level_is_refused_with_the_levels(client, coverage):
    response = client.post(URL, json={"instances": instances(1), "coverage": coverage})
    assert_error(response, 422, "invalid_value")
    message = response.json()["error"]["message"]
    assert f"coverage {float(coverage)} is not calibrated" in message and "0.9, 0.99, 0.999" in message


@pytest.mark.parametrize("coverage", [1.5, 0, -0.1, True, "high", "NaN", [0.9]])
def test_a_coverage_that_is_no_level_at_all_is_refused(client, coverage):
    response = client.post(URL, json={"instances": instances(1), "coverage": coverage})
    assert_error(response, 422, "invalid_value")
    assert "coverage must be a number between 0 and 1" in response.json()["error"]["message"]


def test_query_coverage_is_checked_too(client, digit_png):
    response = client.post(f"{URL}?coverage=0.97", content=digit_png, headers={"content-type": "image/png"})
    assert_error(response, 422, "invalid_value")
    assert "send one of 0.9, 0.99, 0.999" in response.json()["error"]["message"]


def test_a_model_without_calibrated_sets_refuses_coverage_and_answers_without_it(client):
    response = client.post("/v1/uncertainty", json={"instances": instances(1), "coverage": 0.99})
    assert_error(response, 422, "invalid_value")
    assert "has no calibrated prediction sets" in response.json()["error"]["message"]
    plain = client.post("/v1/uncertainty", json={"instances": instances(1), "samples": 10, "seed": 1})
    assert plain.status_code == 200 and "prediction_set" not in plain.json()["predictions"][0]


def test_predict_keeps_its_shape(client):
    response = client.post(
        "/v1/models/calibrated/predict", json={"instances": instances(2), "coverage": 0.99}
    )
    assert response.status_code == 200, response.text
    for prediction in response.json()["predictions"]:
        assert set(prediction) == {"label", "class_name", "confidence", "probabilities"}


def test_metadata_lists_levels_temperature_and_policy(client):
    uncertainty = client.get("/v1/models/calibrated").json()["uncertainty"]
    assert uncertainty["coverage_levels"] == [0.9, 0.99, 0.999]
    assert uncertainty["temperature"] == TEMPERATURE
    assert uncertainty["conformal"]["method"] == "raps"
    assert uncertainty["abstention"]["threshold"] == ABSTAIN_ABOVE
    older = client.get("/v1/models/mnist-mlp").json()["uncertainty"]
    assert older["coverage_levels"] == [] and older["conformal"] is None and older["temperature"] == 1.0


V2_INFER = "/v2/models/calibrated/infer"


def v2_request(pixels: list[list[float]], **parameters) -> dict:
    tensor = {
        "name": "input",
        "datatype": "FP32",
        "shape": [len(pixels), 784],
        "data": [v for row in pixels for v in row],
    }
    return {"inputs": [tensor], "parameters": parameters}


def test_v2_exposes_the_set_as_a_bool_tensor_as_the_native_route_builds_it(client):
    pixels = instances(3)
    answer = client.post(V2_INFER, json=v2_request(pixels, mc_samples=30, seed=5, coverage=0.99))
    assert answer.status_code == 200, answer.text
    assert answer.json()["parameters"] == {"mc_samples": 30, "seed": 5, "coverage": 0.99}
    outputs = {o["name"]: o for o in answer.json()["outputs"]}
    assert (outputs["prediction_set"]["datatype"], outputs["prediction_set"]["shape"]) == ("BOOL", [3, 10])
    members = np.array(outputs["prediction_set"]["data"]).reshape(3, 10)
    native = client.post(URL, json={"instances": pixels, "samples": 30, "seed": 5, "coverage": 0.99}).json()
    for row, probabilities, prediction in zip(
        members,
        np.float32(outputs["probabilities"]["data"]).reshape(3, 10),
        native["predictions"],
        strict=True,
    ):
        assert np.flatnonzero(row).tolist() == prediction["prediction_set"]
        np.testing.assert_array_equal(probabilities, np.float32(prediction["probabilities"]))  # tempered
    meta = client.get("/v2/models/calibrated").json()
    assert {"name": "prediction_set", "datatype": "BOOL", "shape": [-1, 10]} in meta["outputs"]


@pytest.mark.parametrize(
    ("parameters", "status", "message"),
    [
        ({"coverage": 0.99}, 400, "send it with mc_samples"),
        ({"mc_samples": 5, "coverage": 2}, 400, "coverage must be a number between 0 and 1"),
        ({"mc_samples": 5, "coverage": 0.97}, 422, "send one of 0.9, 0.99, 0.999"),
    ],
)
def test_v2_refuses_coverage_it_cannot_serve(client, parameters, status, message):
    response = client.post(V2_INFER, json=v2_request(instances(1), **parameters))
    assert response.status_code == status and message in response.json()["error"]


def test_v2_prediction_set_output_needs_coverage(client):
    request = {**v2_request(instances(1), mc_samples=5), "outputs": [{"name": "prediction_set"}]}
    response = client.post(V2_INFER, json=request)
    assert response.status_code == 400 and "send the request parameter coverage" in response.json()["error"]
