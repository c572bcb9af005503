"""The Open Inference Protocol (KServe V2) routes: JSON and hand-built binary tensor requests, and
every refusal answered as the protocol's `{"error": "<message>"}` with a 4xx, never a 5xx."""

from __future__ import annotations

import copy
import threading
from typing import Any

import numpy as np
import orjson
import pytest
from fastapi.testclient import TestClient

from service.http import v2_codec
from service.http.app import create_app
from service.http.routes import v2 as v2_routes
from service.settings import Settings
from tests.conftest import publish_tiny
from tests.service.conftest import png_bytes

INFER = "/v2/models/mnist-mlp/infer"
UNCERTAINTY = ["std", "predictive_entropy", "expected_entropy", "mutual_information", "variation_ratio"]


def digit() -> np.ndarray:
    """(28, 28) uint8: a vertical stroke on a dark background, MNIST style."""
    pixels = np.zeros((28, 28), dtype=np.uint8)
    pixels[6:22, 13:16] = 255
    pixels[6:9, 8:16] = 180
    return pixels


def tensor(values: np.ndarray, shape: list[int] | None = None, datatype: str = "FP32") -> dict[str, Any]:
    return {
        "name": "input",
        "shape": list(values.shape) if shape is None else shape,
        "datatype": datatype,
        "data": values.ravel().tolist(),
    }


def json_request(values: np.ndarray, datatype: str = "FP32", **fields: Any) -> dict[str, Any]:
    return {"inputs": [tensor(values, datatype=datatype)], **fields}


def binary_body(request: dict[str, Any], data: bytes) -> tuple[bytes, dict[str, str]]:
    """The binary tensor data extension, by hand: JSON header, then the input's bytes."""
    header = orjson.dumps(request)
    return header + data, {
        "Inference-Header-Content-Length": str(len(header)),
        "Content-Type": "application/octet-stream",
    }


def binary_request(values: np.ndarray, datatype: str = "FP32", **fields: Any) -> tuple[bytes, dict[str, str]]:
    data = values.astype("<f4" if datatype == "FP32" else "u1").tobytes()
    request = {
        "inputs": [
            {
                "name": "input",
                "shape": list(values.shape),
                "datatype": datatype,
                "parameters": {"binary_data_size": len(data)},
            }
        ],
        **fields,
    }
    return binary_body(request, data)


def outputs(response: Any) -> dict[str, np.ndarray]:
    """Every output of a 200 answer as an array, JSON or binary, checked against its shape."""
    assert response.status_code == 200, response.text
    header_length = response.headers.get("inference-header-content-length")
    content = response.content
    header = orjson.loads(content if header_length is None else content[: int(header_length)])
    binary = b"" if header_length is None else content[int(header_length) :]
    arrays = {}
    for output in header["outputs"]:
        dtype = {"FP32": "<f4", "INT64": "<i8"}[output["datatype"]]
        size = output.get("parameters", {}).get("binary_data_size")
        if size is None:
            array = np.asarray(output["data"], dtype=dtype)
        else:
            array, binary = np.frombuffer(binary[:size], dtype=dtype), binary[size:]
        arrays[output["name"]] = array.reshape(output["shape"])
    assert binary == b"", "bytes left over after the declared binary outputs"
    return arrays


def assert_v2_error(response: Any, status: int, fragment: str = "") -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and isinstance(body["error"], str), body
    assert fragment in body["error"], body["error"]
    return str(body["error"])


# --- health and metadata -------------------------------------------------------------------------


def test_server_metadata_and_health(client):
    server = client.get("/v2").json()
    assert server["name"] == "dropserve"
    assert server["version"] == "0.1.0"
    assert "binary_tensor_data" in server["extensions"]
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").json() == {"ready": True}
    assert client.get("/v2/models/mnist-mlp/ready").json() == {"name": "mnist-mlp", "ready": True}
    assert client.get("/v2/models/mnist-mlp/versions/1/ready").status_code == 200


def test_model_metadata_lists_versions_and_tensors(repository, settings):
    publish_tiny(repository, seed=9)
    with TestClient(create_app(settings)) as client:
        meta = client.get("/v2/models/mnist-mlp").json()
        assert meta["name"] == "mnist-mlp"
        assert meta["versions"] == ["1", "2"]
        assert meta["platform"] == "pytorch"
        assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 784]}]
        assert {o["name"]: (o["datatype"], o["shape"]) for o in meta["outputs"]} == {
            "probabilities": ("FP32", [-1, 10]),
            "label": ("INT64", [-1]),
            "std": ("FP32", [-1, 10]),
            "predictive_entropy": ("FP32", [-1]),
            "expected_entropy": ("FP32", [-1]),
            "mutual_information": ("FP32", [-1]),
            "variation_ratio": ("FP32", [-1]),
        }
        assert client.get("/v2/models/mnist-mlp/versions/1").json()["versions"] == ["1"]


def test_not_ready_without_models(tmp_path):
    with TestClient(create_app(Settings(model_repository=tmp_path))) as client:
        assert client.get("/v2/health/live").status_code == 200
        response = client.get("/v2/health/ready")
        assert_v2_error(response, 503, "no model")
        assert response.headers["retry-after"]
        assert_v2_error(client.get("/v2/models/mnist-mlp/ready"), 503)
        assert_v2_error(client.post(INFER, json=json_request(np.zeros((1, 784), np.float32))), 503)


@pytest.mark.parametrize(
    ("path", "fragment"),
    [
        ("/v2/models/nope", "unknown model 'nope'"),
        ("/v2/models/nope/ready", "unknown model"),
        ("/v2/models/mnist-mlp/versions/7", "no version 7"),
        ("/v2/models/mnist-mlp/versions/7/ready", "no version 7"),
        ("/v2/models/mnist-mlp/versions/latest", "versions are integers"),
        ("/v2/models/mnist-mlp/versions/１/ready", "versions are integers"),  # a full-width digit
        ("/v2/no/such/route", "no route GET /v2/no/such/route"),
        ("/v2/models/mnist-mlp/infer", "POST /v2/models/{name}"),  # GET where POST is meant
    ],
)
def test_unknown_models_versions_and_routes_are_404(client, path, fragment):
    assert_v2_error(client.get(path), 404, fragment)


def test_unknown_model_or_version_to_infer_is_404(client):
    body = json_request(np.zeros((1, 784), np.float32))
    assert_v2_error(client.post("/v2/models/nope/infer", json=body), 404, "unknown model")
    assert_v2_error(client.post("/v2/models/mnist-mlp/versions/3/infer", json=body), 404, "no version 3")


# --- inference -----------------------------------------------------------------------------------


def test_json_fp32_matches_the_native_prediction(client):
    pixels = digit().astype(np.float32) / 255.0
    response = client.post(INFER, json=json_request(pixels.reshape(1, 784), id="req-1"))
    body = response.json()
    assert response.headers["content-type"] == "application/json"
    assert body["model_name"] == "mnist-mlp" and body["model_version"] == "1" and body["id"] == "req-1"
    assert "parameters" not in body
    answer = outputs(response)
    assert list(answer) == ["probabilities", "label"]
    assert answer["probabilities"].shape == (1, 10) and answer["label"].shape == (1,)
    assert answer["probabilities"].sum() == pytest.approx(1.0, abs=1e-5)
    native = client.post("/v1/predict", json={"instances": [pixels.tolist()]}).json()["predictions"][0]
    np.testing.assert_array_equal(answer["probabilities"][0], np.float32(native["probabilities"]))
    assert answer["label"][0] == native["label"]


def test_uint8_equals_fp32_and_the_same_png(client):
    pixels = digit()
    as_uint8 = outputs(client.post(INFER, json=json_request(pixels.reshape(1, 784), "UINT8")))
    as_fp32 = outputs(client.post(INFER, json=json_request(pixels.reshape(1, 784) / np.float32(255))))
    np.testing.assert_array_equal(as_uint8["probabilities"], as_fp32["probabilities"])
    png = client.post("/v1/predict", content=png_bytes(pixels), headers={"content-type": "image/png"})
    np.testing.assert_array_equal(
        as_uint8["probabilities"][0], np.float32(png.json()["predictions"][0]["probabilities"])
    )


def test_every_accepted_shape_and_nesting_gives_the_same_answer(client):
    rng = np.random.default_rng(0)
    batch = rng.random((3, 784), dtype=np.float32)
    flat = outputs(client.post(INFER, json=json_request(batch)))
    assert flat["probabilities"].shape == (3, 10)
    for shape in ([3, 28, 28], [3, 1, 28, 28]):
        nested = {"name": "input", "shape": shape, "datatype": "FP32", "data": batch.reshape(shape).tolist()}
        flat_data = {**nested, "data": batch.ravel().tolist()}
        for request_tensor in (nested, flat_data):
            answer = outputs(client.post(INFER, json={"inputs": [request_tensor]}))
            np.testing.assert_array_equal(answer["probabilities"], flat["probabilities"])


def test_mc_samples_add_the_uncertainty_outputs_as_the_native_route_computes_them(client):
    pixels = digit().astype(np.float32) / 255.0
    request = json_request(pixels.reshape(1, 784), parameters={"mc_samples": 50, "seed": 7})
    first, second = client.post(INFER, json=request), client.post(INFER, json=request)
    assert first.content == second.content  # the same seed, the same bytes
    assert first.json()["parameters"] == {"mc_samples": 50, "seed": 7}
    answer = outputs(first)
    assert list(answer) == ["probabilities", "label", *UNCERTAINTY]
    native = client.post(
        "/v1/uncertainty", json={"instances": [pixels.tolist()], "samples": 50, "seed": 7}
    ).json()["predictions"][0]
    for name in ("probabilities", "std"):
        np.testing.assert_array_equal(answer[name][0], np.float32(native[name]))
    for name in ("predictive_entropy", "expected_entropy", "mutual_information", "variation_ratio"):
        assert answer[name].shape == (1,)
        assert answer[name][0] == np.float32(native[name])
    assert answer["label"][0] == native["label"]


def test_mc_samples_without_seed_report_the_seed_used(client):
    request = json_request(np.full((1, 784), 0.5, np.float32), parameters={"mc_samples": 5})
    first = client.post(INFER, json=request)
    seed = first.json()["parameters"]["seed"]
    again = client.post(INFER, json={**request, "parameters": {"mc_samples": 5, "seed": seed}})
    assert again.content == first.content


@pytest.mark.parametrize("mc", [None, {"mc_samples": 20, "seed": 3}], ids=["predict", "mc"])
def test_a_client_s_timeout_bounds_its_request_in_the_engine(client, mc):
    """tritonclient's `infer(timeout=...)`: microseconds, 0 for none. A bound the request meets
    changes nothing; one no request can meet (a microsecond) is the engine's timeout, 503."""
    request = json_request(digit().astype(np.float32).reshape(1, 784) / 255, parameters=mc or {})
    alone = client.post(INFER, json=request)
    for timeout_us in (0, 60_000_000):
        timed = client.post(INFER, json={**request, "parameters": {**(mc or {}), "timeout": timeout_us}})
        assert timed.content == alone.content
    late = client.post(INFER, json={**request, "parameters": {**(mc or {}), "timeout": 1}})
    assert_v2_error(late, 503, "inference took longer than 1e-06 s; it was stopped")
    assert late.headers["retry-after"] == "1"


def test_requested_outputs_in_their_order_each_json_or_binary(client):
    values = np.full((2, 784), 0.25, np.float32)
    request = json_request(
        values,
        parameters={"mc_samples": 10, "seed": 1},
        outputs=[
            {"name": "mutual_information", "parameters": {"binary_data": True}},
            {"name": "label"},
            {"name": "std", "parameters": {"binary_data": True}},
        ],
    )
    response = client.post(INFER, json=request)
    assert response.headers["content-type"] == "application/octet-stream"
    header = orjson.loads(response.content[: int(response.headers["inference-header-content-length"])])
    assert [o["name"] for o in header["outputs"]] == ["mutual_information", "label", "std"]
    assert header["outputs"][0]["parameters"] == {"binary_data_size": 2 * 4}
    assert header["outputs"][1]["data"] == [int(x) for x in header["outputs"][1]["data"]]
    assert header["outputs"][2]["parameters"] == {"binary_data_size": 2 * 10 * 4}
    answer = outputs(response)
    everything = outputs(client.post(INFER, json={**request, "outputs": []}))  # [] means all, as JSON
    for name in ("mutual_information", "label", "std"):
        np.testing.assert_array_equal(answer[name], everything[name])


def test_binary_request_and_binary_outputs(client):
    pixels = np.stack([digit(), np.flipud(digit())]).reshape(2, 784)
    body, headers = binary_request(pixels / np.float32(255), parameters={"binary_data_output": True})
    response = client.post(INFER, content=body, headers=headers)
    assert response.headers["content-type"] == "application/octet-stream"
    header_length = int(response.headers["inference-header-content-length"])
    header = orjson.loads(response.content[:header_length])
    assert [o["parameters"]["binary_data_size"] for o in header["outputs"]] == [2 * 10 * 4, 2 * 8]
    assert all("data" not in o for o in header["outputs"])
    answer = outputs(response)
    as_json = outputs(client.post(INFER, json=json_request(pixels, "UINT8")))
    np.testing.assert_array_equal(answer["probabilities"], as_json["probabilities"])
    np.testing.assert_array_equal(answer["label"], as_json["label"])
    # UINT8 in binary, answered as JSON (one output switched back with binary_data false)
    body, headers = binary_request(
        pixels, "UINT8", outputs=[{"name": "probabilities", "parameters": {"binary_data": False}}]
    )
    response = client.post(INFER, content=body, headers=headers)
    assert "inference-header-content-length" not in response.headers
    np.testing.assert_array_equal(outputs(response)["probabilities"], as_json["probabilities"])


def test_binary_request_with_uncertainty_on_a_pinned_version(repository, settings):
    publish_tiny(repository, seed=9)
    with TestClient(create_app(settings)) as client:
        values = np.full((1, 1, 28, 28), 0.5, np.float32)
        body, headers = binary_request(values, parameters={"mc_samples": 20, "seed": 3})
        pinned = client.post("/v2/models/mnist-mlp/versions/1/infer", content=body, headers=headers)
        default = client.post(INFER, content=body, headers=headers)
        assert pinned.json()["model_version"] == "1" and default.json()["model_version"] == "2"
        assert set(outputs(pinned)) == {"probabilities", "label", *UNCERTAINTY}
        assert not np.array_equal(outputs(pinned)["probabilities"], outputs(default)["probabilities"])


def test_a_large_body_is_decoded_off_the_event_loop(client, monkeypatch):
    threads = []

    def recording_decode(*args: Any) -> Any:
        threads.append(threading.current_thread().name)
        return v2_codec.decode_infer_request(*args)

    monkeypatch.setattr(v2_routes, "decode_infer_request", recording_decode)
    small = json_request(np.zeros((1, 784), np.float32))
    large = json_request(np.random.default_rng(1).random((8, 784)).astype(np.float32))  # ~125 kB of JSON
    assert outputs(client.post(INFER, json=small))["probabilities"].shape == (1, 10)
    assert outputs(client.post(INFER, json=large))["probabilities"].shape == (8, 10)
    assert not threads[0].startswith("decode") and threads[1].startswith("decode")


# --- refusals ------------------------------------------------------------------------------------

VALID: dict[str, Any] = {
    "inputs": [{"name": "input", "shape": [1, 784], "datatype": "FP32", "data": [0.5] * 784}]
}


def mutated(change: Any) -> dict[str, Any]:
    request = copy.deepcopy(VALID)
    change(request)
    return request


def set_input(**fields: Any) -> Any:
    return lambda request: request["inputs"][0].update(fields)


def set_data(index: int, value: Any) -> Any:
    return lambda request: request["inputs"][0]["data"].__setitem__(index, value)


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        (lambda r: r.update(id=5), '"id" must be a string'),
        (lambda r: r.update(extra=1), "unknown field 'extra'"),
        (lambda r: r.pop("inputs"), '"inputs" must be a non-empty list'),
        (lambda r: r.update(inputs=[]), '"inputs" must be a non-empty list'),
        (lambda r: r.update(inputs=["input"]), "each input must be a JSON object"),
        (set_input(name="pixels"), "unknown input 'pixels'; this model takes one, 'input'"),
        (lambda r: r["inputs"].append(r["inputs"][0]), "appears 2 times"),
        (set_input(datatype="FP64"), "datatype 'FP64' is not accepted; send FP32"),
        (set_input(datatype="INT64"), "datatype 'INT64' is not accepted"),
        (set_input(datatype="BYTES"), "datatype 'BYTES' is not accepted"),
        (set_input(datatype=None), "datatype None is not accepted"),
        (set_input(shape=[1, 783]), "shape [1, 783] is not accepted; send [B, 784], [B, 28, 28]"),
        (set_input(shape=[784]), "shape [784] is not accepted"),
        (set_input(shape=[1, 28, 27]), "is not accepted"),
        (set_input(shape=[1, 3, 28, 28]), "is not accepted"),
        (set_input(shape=[0, 784]), "with B >= 1"),
        (set_input(shape=[-1, 784]), "with B >= 1"),
        (set_input(shape=[1.0, 784]), "is not accepted"),
        (set_input(shape=[True, 784]), "is not accepted"),
        (set_input(shape="1x784"), "is not accepted"),
        (set_input(shape=[2, 784]), "shape [2, 784] holds 1568 values, but data has 784"),
        (set_input(data=[0.5] * 783), "holds 784 values, but data has 783"),
        (lambda r: r["inputs"][0].pop("data"), "data must be a list of numbers"),
        (set_input(data="0.5"), "data must be a list of numbers"),
        (set_input(data=[[0.5] * 28] * 27 + [[0.5] * 27]), "rectangular list of numbers"),
        (set_data(3, "0.5"), "rectangular list of numbers"),
        (set_data(3, None), "rectangular list of numbers"),
        (set_data(3, True), "no booleans"),
        (set_data(3, 2**70), "FP32 values must be in [0, 1]"),
        (set_input(datatype="UINT8", data=[0] * 783 + [2**70]), "UINT8 values must be integers"),
        (set_data(3, 1.5), "FP32 values must be in [0, 1]; send 0-255 values as UINT8"),
        (set_data(3, -0.1), "FP32 values must be in [0, 1]"),
        (set_data(3, 1e300), "FP32 values must be in [0, 1]"),
        (set_input(datatype="UINT8", data=[256] * 784), "UINT8 values must be integers in [0, 255]"),
        (set_input(datatype="UINT8", data=[-1] * 784), "UINT8 values must be integers in [0, 255]"),
        (set_input(datatype="UINT8", data=[1.5] * 784), "UINT8 values must be integers in [0, 255]"),
        (set_input(parameters={"shared_memory_region": "x"}), "unknown field 'shared_memory_region'"),
        (set_input(parameters=[]), "parameters must be a JSON object"),
        (lambda r: r.update(parameters={"priority": 1}), "request parameter 'priority' is not supported"),
        (lambda r: r.update(parameters={"timeout": -1}), "timeout must be an integer from 0 to"),
        (lambda r: r.update(parameters={"timeout": "5"}), "timeout must be an integer"),
        (lambda r: r.update(parameters={"timeout": 0.5}), "timeout must be an integer"),
        (lambda r: r.update(parameters=[1]), '"parameters" must be a JSON object'),
        (lambda r: r.update(parameters={"mc_samples": 0}), "mc_samples must be an integer from 1 to 500"),
        (lambda r: r.update(parameters={"mc_samples": 501}), "from 1 to 500, got 501"),
        (lambda r: r.update(parameters={"mc_samples": "10"}), "mc_samples must be an integer"),
        (lambda r: r.update(parameters={"mc_samples": True}), "mc_samples must be an integer"),
        (lambda r: r.update(parameters={"mc_samples": 10, "seed": -1}), "seed must be an integer from 0"),
        (lambda r: r.update(parameters={"mc_samples": 10, "seed": 2**63}), "seed must be an integer"),
        (lambda r: r.update(parameters={"seed": 1}), "send it with mc_samples"),
        (
            lambda r: r.update(parameters={"binary_data_output": 1}),
            "binary_data_output must be true or false",
        ),
        (lambda r: r.update(outputs=[{"name": "logits"}]), "unknown output 'logits'; this model's outputs"),
        (lambda r: r.update(outputs=[{"name": "std"}]), "send the request parameter mc_samples"),
        (lambda r: r.update(outputs=[{"name": "label"}, {"name": "label"}]), "requested twice"),
        (lambda r: r.update(outputs={"name": "label"}), '"outputs" must be a list'),
        (lambda r: r.update(outputs=["label"]), "each requested output must be a JSON object"),
        (
            lambda r: r.update(outputs=[{"name": "probabilities", "parameters": {"classification": 3}}]),
            "classification extension is not supported",
        ),
        (
            lambda r: r.update(outputs=[{"name": "label", "parameters": {"binary_data": "yes"}}]),
            "binary_data must be true or false",
        ),
        (lambda r: r.update(outputs=[{"name": "label", "shape": [1]}]), "unknown field 'shape'"),
    ],
)
def test_invalid_json_requests_are_400_with_the_reason(client, change, fragment):
    assert_v2_error(client.post(INFER, json=mutated(change)), 400, fragment)


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"{", "malformed JSON"),
        (b'{"inputs": [{"data": [NaN]}]}', "malformed JSON"),
        (b"[]", "the request must be a JSON object"),
        (b"", "malformed JSON"),
        (b"\xff\xfe", "malformed JSON"),
    ],
)
def test_malformed_bodies_are_400(client, body, fragment):
    response = client.post(INFER, content=body, headers={"content-type": "application/json"})
    assert_v2_error(response, 400, fragment)


def binary_input(size: Any, **fields: Any) -> dict[str, Any]:
    tensor = {
        "name": "input",
        "shape": [1, 784],
        "datatype": "FP32",
        "parameters": {"binary_data_size": size},
    }
    return {"inputs": [{**tensor, **fields}]}


FP32_BYTES = np.full(784, 0.5, "<f4").tobytes()


@pytest.mark.parametrize(
    ("request_json", "data", "fragment"),
    [
        (
            binary_input(3136),
            FP32_BYTES[:-4],
            "declares 3136 bytes of binary data, but the body carries 3132",
        ),
        (binary_input(3136), FP32_BYTES + b"\0", "but the body carries 3137"),
        (binary_input(3132), FP32_BYTES[:-4], "binary_data_size 3132 does not match shape [1, 784] of FP32"),
        (binary_input(784, datatype="UINT8"), FP32_BYTES, "carries 3136"),
        (binary_input(True), FP32_BYTES, "binary_data_size True does not match"),
        (binary_input("3136"), FP32_BYTES, "binary_data_size '3136' does not match"),
        (binary_input(3136, data=[0.5] * 784), FP32_BYTES, "both data and binary_data_size"),
        (VALID, FP32_BYTES, "no input declares them"),
        (binary_input(3136), np.full(784, np.nan, "<f4").tobytes(), "finite numbers (no NaN or infinity)"),
        (binary_input(3136), np.full(784, np.inf, "<f4").tobytes(), "finite numbers"),
        (binary_input(3136), np.full(784, 2.0, "<f4").tobytes(), "FP32 values must be in [0, 1]"),
    ],
)
def test_invalid_binary_requests_are_400(client, request_json, data, fragment):
    body, headers = binary_body(request_json, data)
    assert_v2_error(client.post(INFER, content=body, headers=headers), 400, fragment)


@pytest.mark.parametrize("header_length", ["abc", "-1", "99999", "", "1e3"])
def test_bad_inference_header_content_length_is_400(client, header_length):
    body, _ = binary_body(binary_input(3136), FP32_BYTES)
    response = client.post(INFER, content=body, headers={"Inference-Header-Content-Length": header_length})
    assert_v2_error(response, 400, "Inference-Header-Content-Length must be the byte length")


def test_binary_data_size_without_the_header_is_400(client):
    response = client.post(INFER, content=orjson.dumps(binary_input(3136)))
    assert_v2_error(response, 400, "binary_data_size needs the Inference-Header-Content-Length header")


def test_compressed_bodies_are_415(client):
    response = client.post(INFER, json=VALID, headers={"Content-Encoding": "gzip"})
    assert_v2_error(response, 415, "send the body uncompressed")


def test_bounds_are_413_in_the_protocols_shape(client):
    too_many = json_request(np.zeros((9, 784), np.float32))  # the test settings allow 8
    assert_v2_error(client.post(INFER, json=too_many), 413, "9 instances in one request; at most 8")
    body, headers = binary_request(np.zeros((70, 784), np.float32))  # 220 kB, over 200 kB
    assert_v2_error(client.post(INFER, content=body, headers=headers), 413, "request body over 200000 bytes")


def test_api_key_guards_v2_inference_only(repository):
    key = "k" * 32
    with TestClient(create_app(Settings(model_repository=repository, api_key=key))) as client:
        response = client.post(INFER, json=VALID)
        assert_v2_error(response, 401, "Authorization: Bearer")
        assert response.headers["www-authenticate"] == "Bearer"
        assert_v2_error(client.post(INFER, json=VALID, headers={"Authorization": "Bearer nope"}), 401)
        assert client.post(INFER, json=VALID, headers={"Authorization": f"Bearer {key}"}).status_code == 200
        for path in ("/v2", "/v2/health/ready", "/v2/models/mnist-mlp", "/v2/models/mnist-mlp/ready"):
            assert client.get(path).status_code == 200  # metadata and health stay open, as in /v1


def test_openapi_documents_the_v2_routes(client):
    paths = client.get("/openapi.json").json()["paths"]
    body = paths["/v2/models/{name}/infer"]["post"]["requestBody"]["content"]
    assert set(body) == {"application/json", "application/octet-stream"}
    assert "/v2/models/{name}/versions/{version}/ready" in paths
    assert not any("{path" in path for path in paths)  # the catch-all stays out of the document
