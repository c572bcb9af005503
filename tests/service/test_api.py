import base64
import io
import math

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from models.artifact import load_artifact
from models.mc_dropout import MaskSource, mc_dropout_logits, passes_per_chunk
from models.uncertainty import summarize_logits
from service.http.app import create_app
from service.settings import Settings
from tests.conftest import publish_tiny
from tests.service.conftest import png_bytes

UNCERTAINTY_FIELDS = {
    "label", "class_name", "confidence", "probabilities", "std", "predictive_entropy",
    "expected_entropy", "mutual_information", "variation_ratio", "ood",
}  # fmt: skip


def assert_error(response, status, code):
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert body["error"]["code"] == code
    assert body["error"]["message"]


def test_health_and_readiness(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["models"] == {"mnist-mlp": [1]}
    assert client.head("/healthz").status_code == client.head("/readyz").status_code == 200


def test_not_ready_without_models(tmp_path):
    with TestClient(create_app(Settings(model_repository=tmp_path))) as client:
        response = client.get("/readyz")
        assert_error(response, 503, "unavailable")
        assert response.headers["retry-after"]
        assert client.head("/readyz").status_code == 503
        # It says how to get a model loaded: what to train, and what loads it without an admin key.
        message = response.json()["error"]["message"]
        assert f"python -m training --artifacts {tmp_path}" in message
        assert "DROPSERVE_POLL_INTERVAL_S" in message
        assert_error(client.post("/v1/predict", json={"instances": [[0.0] * 784]}), 503, "unavailable")


def test_model_list_and_metadata(client):
    listing = client.get("/v1/models").json()
    assert listing["default_model"] == "mnist-mlp"
    assert listing["models"] == [{"name": "mnist-mlp", "versions": [1], "default_version": 1, "ready": True}]
    meta = client.get("/v1/models/mnist-mlp").json()
    assert meta["input"]["shape"] == [1, 28, 28]
    assert "image/png" in meta["input"]["media_types"]
    assert meta["classes"] == [str(d) for d in range(10)]
    assert meta["architecture"]["hidden_sizes"] == [16]
    assert meta["uncertainty"]["ood_threshold"] == 0.05
    assert meta["uncertainty"]["samples_max"] == 500
    assert client.get("/v1/models/mnist-mlp/versions/1").json()["version"] == 1


def test_predict_png_upload(client, digit_png):
    response = client.post("/v1/predict", files={"file": ("digit.png", digit_png, "image/png")})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == {"name": "mnist-mlp", "version": 1}
    (prediction,) = body["predictions"]
    assert sum(prediction["probabilities"]) == pytest.approx(1.0, abs=1e-5)
    assert prediction["label"] == int(np.argmax(prediction["probabilities"]))
    assert prediction["class_name"] == str(prediction["label"])
    assert prediction["confidence"] == max(prediction["probabilities"])


def test_all_body_kinds_agree(client, digit_png):
    pixels = (np.asarray(Image.open(io.BytesIO(digit_png))) / 255.0).tolist()
    answers = [
        client.post("/v1/predict", files=[("file", ("a.png", digit_png, "image/png"))]),
        client.post("/v1/predict", content=digit_png, headers={"content-type": "image/png"}),
        client.post("/v1/predict", json={"instances": [pixels]}),
        client.post("/v1/predict", json={"instances": [np.ravel(pixels).tolist()]}),
        client.post("/v1/predict", json={"instances": [{"b64": base64.b64encode(digit_png).decode()}]}),
        client.post("/v1/models/mnist-mlp/predict", json={"instances": [pixels]}),
        client.post("/v1/models/mnist-mlp/versions/1/predict", json={"instances": [pixels]}),
    ]
    probabilities = [r.json()["predictions"][0]["probabilities"] for r in answers]
    for other in probabilities[1:]:
        assert other == pytest.approx(probabilities[0], abs=1e-6)


def test_several_files_and_instances(client, digit_png):
    files = [("file", (f"{i}.png", digit_png, "image/png")) for i in range(3)]
    assert len(client.post("/v1/predict", files=files).json()["predictions"]) == 3
    mixed = [[0.0] * 784, {"b64": base64.b64encode(digit_png).decode()}]
    assert len(client.post("/v1/predict", json={"instances": mixed}).json()["predictions"]) == 2


def test_uncertainty_has_every_field_and_is_reproducible(client, digit_png):
    url = "/v1/uncertainty?samples=100&seed=1"
    first = client.post(url, content=digit_png, headers={"content-type": "image/png"})
    second = client.post(url, content=digit_png, headers={"content-type": "image/png"})
    assert first.status_code == 200, first.text
    assert first.content == second.content  # the same seed gives the identical body
    body = first.json()
    assert body["samples"] == 100 and body["seed"] == 1
    (prediction,) = body["predictions"]
    assert set(prediction) == UNCERTAINTY_FIELDS
    assert sum(prediction["probabilities"]) == pytest.approx(1.0, abs=1e-5)
    assert prediction["mutual_information"] >= 0
    assert prediction["mutual_information"] == pytest.approx(
        prediction["predictive_entropy"] - prediction["expected_entropy"], abs=1e-5
    )
    assert prediction["ood"] == (prediction["mutual_information"] > 0.05)
    assert 0 <= prediction["variation_ratio"] <= 1
    assert 0 <= prediction["predictive_entropy"] <= math.log(10) + 1e-6


def test_uncertainty_json_options_and_samples(client):
    body = {"instances": [[0.5] * 784], "samples": 7, "seed": 3, "return_samples": True}
    answer = client.post("/v1/uncertainty", json=body).json()
    samples = answer["predictions"][0]["sample_probabilities"]
    assert answer["samples"] == 7 and len(samples) == 7 and len(samples[0]) == 10
    assert np.mean(samples, axis=0) == pytest.approx(answer["predictions"][0]["probabilities"], abs=1e-6)


def test_uncertainty_without_seed_reports_the_seed_it_used(client):
    body = {"instances": [[0.5] * 784]}
    first = client.post("/v1/models/mnist-mlp/uncertainty", json=body).json()
    assert first["samples"] == 100
    again = client.post("/v1/uncertainty", json={**body, "seed": first["seed"]}).json()
    assert again["predictions"] == first["predictions"]


def test_highest_version_is_default_and_versions_can_be_pinned(repository, settings):
    publish_tiny(repository, seed=9)
    with TestClient(create_app(settings)) as client:
        body = {"instances": [[0.3] * 784]}
        assert client.post("/v1/predict", json=body).json()["model"]["version"] == 2
        assert (
            client.post("/v1/models/mnist-mlp/versions/1/predict", json=body).json()["model"]["version"] == 1
        )


def test_tampered_version_is_skipped_not_served(repository, settings):
    second = publish_tiny(repository, seed=9)
    (second / "model.safetensors").write_bytes(b"tampered")
    with TestClient(create_app(settings)) as client:
        assert client.get("/v1/models").json()["models"][0]["versions"] == [1]


@pytest.mark.parametrize(
    "kwargs, status, code",
    [
        ({"files": {"file": ("x.txt", b"hello, not an image", "text/plain")}}, 415, "unsupported_media_type"),
        ({"content": b"plain", "headers": {"content-type": "text/plain"}}, 415, "unsupported_media_type"),
        ({"content": b"GIF89a", "headers": {"content-type": "image/svg+xml"}}, 415, "unsupported_media_type"),
        ({"json": {"instances": [[0.1] * 783]}}, 422, "invalid_value"),
        ({"json": {"instances": [[0.1] * 784, [0.1] * 783]}}, 422, "invalid_value"),
        ({"json": {"instances": [[2.0] * 784]}}, 422, "invalid_value"),
        ({"json": {"instances": [["a"] * 784]}}, 422, "invalid_value"),
        ({"json": {"instances": []}}, 422, "invalid_value"),
        ({"json": {"instances": ["x"]}}, 422, "invalid_value"),
        ({"json": {"instances": [{"b64": "***"}]}}, 422, "invalid_value"),
        ({"json": {"nope": 1}}, 400, "bad_request"),
        (
            {"content": b'{"instances": [[NaN]]}', "headers": {"content-type": "application/json"}},
            400,
            "bad_request",
        ),
        ({"content": b"{", "headers": {"content-type": "application/json"}}, 400, "bad_request"),
        (
            {
                "content": b"\x1f\x8b\x08",
                "headers": {"content-type": "application/json", "content-encoding": "gzip"},
            },
            415,
            "unsupported_media_type",
        ),
        ({"json": {"instances": [[0.0] * 784] * 9}}, 413, "payload_too_large"),
        ({"content": b"x" * 300_000, "headers": {"content-type": "image/png"}}, 413, "payload_too_large"),
    ],
)
def test_bad_input_gets_a_clear_4xx(client, kwargs, status, code):
    assert_error(client.post("/v1/predict", **kwargs), status, code)
    assert client.get("/healthz").status_code == 200


def test_non_finite_pixels_are_refused(client):
    # JSON has no NaN literal (that is a 400 above); numbers beyond float32 become inf.
    answer = client.post("/v1/predict", json={"instances": [[0.5] * 783 + [1e39]]})
    assert_error(answer, 422, "invalid_value")
    assert "finite" in answer.json()["error"]["message"]
    answer = client.post("/v1/predict", json={"instances": [[-0.5] + [0.5] * 783]})
    assert_error(answer, 422, "invalid_value")
    assert "[0, 1]" in answer.json()["error"]["message"]


def test_truncated_png_is_refused(client, digit_png):
    response = client.post("/v1/predict", files={"file": ("d.png", digit_png[:60], "image/png")})
    assert_error(response, 400, "bad_request")


def test_huge_image_is_refused(client):
    response = client.post(
        "/v1/predict", content=png_bytes(np.zeros((20, 5000))), headers={"content-type": "image/png"}
    )
    assert response.status_code == 200  # 100k pixels is within the default bound
    small = Settings(model_repository=client.app.state.settings.model_repository, max_image_pixels=1000)
    with TestClient(create_app(small)) as strict:
        refused = strict.post(
            "/v1/predict", content=png_bytes(np.zeros((40, 40))), headers={"content-type": "image/png"}
        )
        assert_error(refused, 413, "payload_too_large")


def test_multipart_without_file_part(client):
    assert_error(
        client.post("/v1/predict", files={"image": ("d.png", b"x", "image/png")}), 400, "bad_request"
    )


@pytest.mark.parametrize(
    "query",
    [
        "samples=0",
        "samples=501",
        "samples=abc",
        "seed=-1",
        "return_samples=maybe",
        "seed=--1",
        "samples=--5",
        "samples=%C2%B2",  # a superscript two: int() would take it
        "samples=1_0",
        "seed=" + "9" * 5000,
    ],
)
def test_bad_uncertainty_options(client, digit_png, query):
    response = client.post(
        f"/v1/uncertainty?{query}", content=digit_png, headers={"content-type": "image/png"}
    )
    assert_error(response, 422, "invalid_value")
    assert len(response.json()["error"]["message"]) < 300  # never the whole offending value


@pytest.mark.parametrize(
    "options", [{"seed": "1" * 5000}, {"samples": "--5"}, {"seed": True}, {"samples": 1.5}]
)
def test_bad_uncertainty_options_in_json(client, options):
    response = client.post("/v1/uncertainty", json={"instances": [[0.0] * 784], **options})
    assert_error(response, 422, "invalid_value")
    assert len(response.json()["error"]["message"]) < 300


def test_an_answer_past_the_response_bound_is_refused_with_what_to_send(repository):
    settings = Settings(model_repository=repository, max_response_values=1000)
    with TestClient(create_app(settings)) as client:
        body = {"instances": [[0.0] * 784] * 2, "samples": 100, "return_samples": True}
        refused = client.post("/v1/uncertainty", json=body)
        assert_error(refused, 413, "payload_too_large")
        assert "at most 50 samples" in refused.json()["error"]["message"]
        body["samples"] = 50
        assert (
            len(client.post("/v1/uncertainty", json=body).json()["predictions"][0]["sample_probabilities"])
            == 50
        )
        body.update(samples=100, return_samples=False)  # the statistics alone are never bounded so
        assert client.post("/v1/uncertainty", json=body).status_code == 200


def test_unknown_model_and_version(client):
    body = {"instances": [[0.0] * 784]}
    assert_error(client.post("/v1/models/nope/predict", json=body), 404, "not_found")
    assert_error(client.post("/v1/models/mnist-mlp/versions/7/uncertainty", json=body), 404, "not_found")
    assert_error(client.get("/v1/models/nope"), 404, "not_found")
    assert_error(client.get("/no/such/route"), 404, "not_found")


def test_api_key_guards_inference(repository):
    key = "k" * 32
    with TestClient(create_app(Settings(model_repository=repository, api_key=key))) as client:
        body = {"instances": [[0.0] * 784]}
        assert_error(client.post("/v1/predict", json=body), 401, "unauthorized")
        assert_error(
            client.post("/v1/predict", json=body, headers={"Authorization": "Bearer wrong"}),
            401,
            "unauthorized",
        )
        assert (
            client.post("/v1/predict", json=body, headers={"Authorization": f"Bearer {key}"}).status_code
            == 200
        )
        assert client.get("/healthz").status_code == 200  # operations stay open


def test_admin_reload_picks_up_new_versions(repository):
    key = "a" * 32
    with TestClient(create_app(Settings(model_repository=repository, admin_key=key))) as client:
        publish_tiny(repository, seed=5)
        assert_error(client.post("/v1/admin/reload"), 401, "unauthorized")
        reloaded = client.post("/v1/admin/reload", headers={"Authorization": f"Bearer {key}"})
        assert reloaded.json()["models"] == {"mnist-mlp": [1, 2]}
        assert client.post("/v1/predict", json={"instances": [[0.0] * 784]}).json()["model"]["version"] == 2


def test_weak_keys_fail_at_start_up(repository):
    with pytest.raises(ValueError, match="16 characters"):
        Settings(model_repository=repository, api_key="short")


def test_openapi_documents_the_routes(client):
    spec = client.get("/openapi.json").json()
    assert "/v1/models/{name}/versions/{version}/uncertainty" in spec["paths"]
    body = spec["paths"]["/v1/predict"]["post"]["requestBody"]["content"]
    assert {"application/json", "multipart/form-data", "image/png"} <= set(body)
    assert client.get("/docs").status_code == 200


def test_sampled_probabilities_are_the_passes_own_float64_values(repository, one_thread):
    # 7 inputs x 10,000 passes of the tiny model: several chunks, filled into one (B, T, C) array
    pixels = np.random.default_rng(5).random((7, 784)).astype(np.float32)
    loaded = load_artifact(repository / "mnist-mlp" / "1")
    assert passes_per_chunk(loaded.weights, 7) < 10_000
    body = {"instances": pixels.tolist(), "samples": 10_000, "seed": 11, "return_samples": True}
    with TestClient(create_app(Settings(model_repository=repository))) as client:
        answer = client.post("/v1/uncertainty", json=body).json()
    logits = mc_dropout_logits(loaded.weights, torch.tensor(pixels), 10_000, MaskSource(11))
    _, probs = summarize_logits(logits.numpy())  # (T, B, C) float64
    for b, prediction in enumerate(answer["predictions"]):
        assert np.array_equal(np.array(prediction["sample_probabilities"]), probs[:, b])  # to the last bit
