"""Integration: the real `tritonclient.http` against a real server and a model trained on real MNIST,
through the Open Inference Protocol, binary tensor data (tritonclient's default) and JSON both."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from training.datasets import load_dataset

pytestmark = pytest.mark.integration
MODEL = "mnist-mlp"
UNCERTAINTY = ("std", "predictive_entropy", "expected_entropy", "mutual_information", "variation_ratio")


@pytest.fixture(scope="module")
def client(server_url: str) -> Iterator[triton.InferenceServerClient]:
    client = triton.InferenceServerClient(server_url.removeprefix("http://"), network_timeout=60)
    yield client
    client.close()


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    """The first 64 real MNIST test digits, (64, 28, 28) uint8, and their labels."""
    splits = load_dataset("mnist")
    return splits.x_test[:64], splits.y_test[:64]


def uint8_input(pixels: np.ndarray, binary: bool = True) -> triton.InferInput:
    tensor = triton.InferInput("input", list(pixels.shape), "UINT8")
    tensor.set_data_from_numpy(pixels, binary_data=binary)
    return tensor


def fp32_input(pixels: np.ndarray, binary: bool = True) -> triton.InferInput:
    values = pixels.reshape(len(pixels), 784).astype(np.float32) / np.float32(255)
    tensor = triton.InferInput("input", list(values.shape), "FP32")
    tensor.set_data_from_numpy(values, binary_data=binary)
    return tensor


def test_server_and_model_metadata_and_readiness(client):
    assert client.is_server_live()
    assert client.is_server_ready()
    server = client.get_server_metadata()
    assert server["name"] == "dropserve" and "binary_tensor_data" in server["extensions"]
    assert client.is_model_ready(MODEL)
    assert client.is_model_ready(MODEL, model_version="1")
    assert not client.is_model_ready("no-such-model")
    assert not client.is_model_ready(MODEL, model_version="99")
    meta = client.get_model_metadata(MODEL)
    assert meta["name"] == MODEL and meta["versions"] == ["1"]
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 784]}]
    # prediction_set: the trained model carries conformal levels
    assert [o["name"] for o in meta["outputs"]] == ["probabilities", "label", *UNCERTAINTY, "prediction_set"]
    assert client.get_model_metadata(MODEL, model_version="1")["versions"] == ["1"]


def test_uint8_binary_predictions_are_right_and_match_the_native_api(client, digits, server_url):
    pixels, labels = digits
    result = client.infer(MODEL, [uint8_input(pixels)])  # binary in, binary out: tritonclient's default
    probabilities = result.as_numpy("probabilities")
    predicted = result.as_numpy("label")
    assert probabilities.dtype == np.float32 and probabilities.shape == (64, 10)
    assert predicted.dtype == np.int64 and predicted.shape == (64,)
    assert np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert (predicted == labels).mean() >= 0.9
    native = httpx.post(
        f"{server_url}/v1/predict", json={"instances": (pixels / np.float32(255)).tolist()}, timeout=60
    )
    expected = np.float32([p["probabilities"] for p in native.json()["predictions"]])
    np.testing.assert_array_equal(probabilities, expected)


def test_fp32_and_uint8_binary_and_json_all_agree(client, digits):
    pixels, _ = digits
    reference = client.infer(MODEL, [uint8_input(pixels)]).as_numpy("probabilities")
    for make_input in (uint8_input, fp32_input):
        for binary in (True, False):
            outputs = [
                triton.InferRequestedOutput(name, binary_data=binary) for name in ("probabilities", "label")
            ]
            result = client.infer(MODEL, [make_input(pixels, binary)], outputs=outputs, request_id="r-1")
            assert result.get_response()["id"] == "r-1"
            np.testing.assert_array_equal(result.as_numpy("probabilities"), reference)
            np.testing.assert_array_equal(result.as_numpy("label"), reference.argmax(axis=1))


def test_mc_samples_give_the_uncertainty_outputs_binary_and_json(client, digits):
    pixels, labels = digits
    parameters = {"mc_samples": 50, "seed": 3}
    binary = client.infer(MODEL, [uint8_input(pixels)], parameters=parameters)
    assert binary.get_response()["parameters"] == parameters
    requested = [triton.InferRequestedOutput(name, binary_data=False) for name in ("label", *UNCERTAINTY)]
    as_json = client.infer(
        MODEL, [fp32_input(pixels, binary=False)], outputs=requested, parameters=parameters
    )
    for name in ("label", *UNCERTAINTY):
        np.testing.assert_array_equal(binary.as_numpy(name), as_json.as_numpy(name))  # the same seed
    assert binary.as_numpy("std").shape == (64, 10)
    assert (binary.as_numpy("label") == labels).mean() >= 0.9
    mutual_information = binary.as_numpy("mutual_information")
    assert mutual_information.dtype == np.float32 and mutual_information.shape == (64,)
    assert (mutual_information >= 0).all()
    np.testing.assert_allclose(
        mutual_information,
        binary.as_numpy("predictive_entropy") - binary.as_numpy("expected_entropy"),
        atol=1e-5,
    )
    assert ((binary.as_numpy("variation_ratio") >= 0) & (binary.as_numpy("variation_ratio") <= 1)).all()
    # noise is far from the digits the model saw: more epistemic uncertainty than real digits have
    noise = np.random.default_rng(0).integers(0, 256, (16, 28, 28), dtype=np.uint8)
    ood = client.infer(MODEL, [uint8_input(noise)], parameters=parameters).as_numpy("mutual_information")
    assert np.median(ood) > np.median(mutual_information)


def test_coverage_gives_the_prediction_set_as_a_bool_tensor(client, digits, server_url):
    pixels, labels = digits
    parameters = {"mc_samples": 100, "seed": 3, "coverage": 0.99}
    requested = [triton.InferRequestedOutput(name) for name in ("label", "prediction_set")]
    result = client.infer(MODEL, [uint8_input(pixels)], outputs=requested, parameters=parameters)
    assert result.get_response()["parameters"] == parameters
    members = result.as_numpy("prediction_set")  # binary BOOL, decoded by tritonclient
    assert members.dtype == np.bool_ and members.shape == (64, 10)
    assert members.sum(axis=1).min() >= 1 and members[np.arange(64), result.as_numpy("label")].all()
    assert members[np.arange(64), labels].mean() >= 0.9
    native = httpx.post(
        f"{server_url}/v1/uncertainty",
        json={"instances": (pixels / 255.0).tolist(), "samples": 100, "seed": 3, "coverage": 0.99},
        timeout=60,
    ).json()["predictions"]
    assert [np.flatnonzero(row).tolist() for row in members] == [p["prediction_set"] for p in native]


def test_infer_s_timeout_bounds_the_request(client, digits):
    """`infer(timeout=...)`, in microseconds: met, the same answer; one no request can meet, 503."""
    pixels, _ = digits
    parameters = {"mc_samples": 50, "seed": 3}
    reference = client.infer(MODEL, [uint8_input(pixels)], parameters=parameters)
    timed = client.infer(MODEL, [uint8_input(pixels)], parameters=parameters, timeout=60_000_000)
    for name in ("probabilities", "label", *UNCERTAINTY):
        np.testing.assert_array_equal(timed.as_numpy(name), reference.as_numpy(name))
    with pytest.raises(InferenceServerException) as late:
        client.infer(MODEL, [uint8_input(pixels)], timeout=1)
    assert late.value.status() == "503"
    assert "inference took longer than 1e-06 s" in late.value.message()


def test_a_wrong_shape_is_refused(client):
    tensor = triton.InferInput("input", [1, 783], "FP32")
    tensor.set_data_from_numpy(np.zeros((1, 783), np.float32))
    with pytest.raises(InferenceServerException) as refused:
        client.infer(MODEL, [tensor])
    assert refused.value.status() == "400"
    assert "shape [1, 783] is not accepted" in refused.value.message()


def test_a_wrong_datatype_is_refused(client):
    tensor = triton.InferInput("input", [1, 784], "FP64")
    tensor.set_data_from_numpy(np.zeros((1, 784), np.float64))
    with pytest.raises(InferenceServerException) as refused:
        client.infer(MODEL, [tensor])
    assert refused.value.status() == "400"
    assert "datatype 'FP64' is not accepted" in refused.value.message()


def test_an_unknown_model_is_refused(client, digits):
    with pytest.raises(InferenceServerException) as refused:
        client.infer("no-such-model", [uint8_input(digits[0][:1])])
    assert refused.value.status() == "404"
    assert "unknown model" in refused.value.message()
