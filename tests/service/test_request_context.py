"""X-Request-ID on every response and in every error envelope; one access-log line per request."""

from __future__ import annotations

import json
import re

import pytest
from fastapi.testclient import TestClient

from service.http.app import create_app
from service.settings import Settings

GENERATED = re.compile(r"[0-9a-f]{32}")


def test_an_id_is_generated_and_echoed_on_every_response(client, digit_png):
    answers = [
        client.get("/healthz"),
        client.get("/metrics"),
        client.post("/v1/predict", files={"file": ("d.png", digit_png, "image/png")}),
        client.get("/no/such/route"),
    ]
    ids = [answer.headers["x-request-id"] for answer in answers]
    assert all(GENERATED.fullmatch(i) for i in ids)
    assert len(set(ids)) == len(ids)


@pytest.mark.parametrize("given", ["abc-123", "req:7/x", "a" * 128, "~!@#$%^&*()_+{}|"])
def test_a_valid_client_id_is_kept(client, given):
    response = client.get("/healthz", headers={"x-request-id": given})
    assert response.headers["x-request-id"] == given


@pytest.mark.parametrize("given", ["two words", "a" * 129, "tab\there", ""])
def test_an_invalid_client_id_is_replaced(client, given):
    response = client.get("/healthz", headers={"x-request-id": given})
    assert GENERATED.fullmatch(response.headers["x-request-id"])


def test_a_non_ascii_id_is_replaced(client):
    response = client.get("/healthz", headers=[(b"x-request-id", "zürich".encode())])
    assert GENERATED.fullmatch(response.headers["x-request-id"])


def error_id(response) -> str:
    envelope = response.json()["error"]
    assert set(envelope) == {"code", "message", "request_id"}
    assert envelope["request_id"] == response.headers["x-request-id"]
    return envelope["request_id"]


def test_every_error_envelope_names_the_request(client, settings):
    refusals = [
        client.post("/v1/models/nope/predict", json={"instances": [[0.0] * 784]}),  # 404, engine error
        client.post("/v1/predict", json={"instances": [[2.0] * 784]}),  # 422, ApiError
        client.post("/v1/predict", content=b"{", headers={"content-type": "application/json"}),  # 400
        client.post("/v1/predict", content=b"x", headers={"content-type": "text/plain"}),  # 415
        client.get("/no/such/route"),  # 404, Starlette's
        client.get("/v1/models/mnist-mlp/versions/x"),  # 422, FastAPI validation
        client.post(  # 413 from the body-size middleware, before any route
            "/v1/predict", content=b"0" * (settings.max_body_bytes + 1), headers={"content-type": "image/png"}
        ),
    ]
    assert [r.status_code for r in refusals] == [404, 422, 400, 415, 404, 422, 413]
    for response in refusals:
        error_id(response)
    kept = client.post("/v1/models/nope/predict", json={"instances": []}, headers={"x-request-id": "mine-1"})
    assert error_id(kept) == "mine-1"


def test_an_unexpected_error_names_the_request_too(settings):
    app = create_app(settings)

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("a bug")

    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/boom", headers={"x-request-id": "trace-500"})
    assert response.status_code == 500
    assert error_id(response) == "trace-500"


def access_lines(capsys) -> list[str]:
    """The access lines the app wrote to stderr so far."""
    return [line for line in capsys.readouterr().err.splitlines() if "service.access" in line]


def test_one_json_access_line_per_request(repository, capsys):
    settings = Settings(model_repository=repository, log_format="json")
    with TestClient(create_app(settings)) as client:
        client.post(
            "/v1/models/mnist-mlp/uncertainty",
            json={"instances": [[0.5] * 784] * 3, "samples": 30, "seed": 1},
            headers={"x-request-id": "log-me"},
        )
        client.post("/v1/models/nope/predict", json={"instances": [[0.0] * 784]})
    lines = [json.loads(line) for line in access_lines(capsys)]
    assert len(lines) == 2
    answered, refused = lines
    assert answered["logger"] == "service.access" and answered["level"] == "info"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", answered["time"])
    assert answered["message"] == f"POST /v1/models/mnist-mlp/uncertainty 200 {answered['latency_ms']:.1f} ms"
    assert answered["method"] == "POST" and answered["path"] == "/v1/models/mnist-mlp/uncertainty"
    assert answered["request_id"] == "log-me"
    assert answered["route"] == "/v1/models/{name}/uncertainty"
    assert answered["status"] == 200 and answered["latency_ms"] > 0
    assert answered["model"] == "mnist-mlp" and answered["version"] == 1
    assert answered["samples"] == 30 and answered["instances"] == 3
    assert answered["round_size"] == 1  # alone in the engine
    assert answered["compute_ms"] > 0 and answered["queue_wait_ms"] >= 0
    assert refused["status"] == 404 and refused["route"] == "/v1/models/{name}/predict"
    assert GENERATED.fullmatch(refused["request_id"])
    assert "model" not in refused and "samples" not in refused


def test_text_access_lines_carry_the_fields_after_the_message(repository, capsys):
    with TestClient(create_app(Settings(model_repository=repository))) as client:
        client.post("/v1/predict", json={"instances": [[0.5] * 784]}, headers={"x-request-id": "t-1"})
    (line,) = access_lines(capsys)
    # The shape of every other text record: local time, level, logger, message.
    assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO service.access: POST /v1/predict 200 ", line)
    assert " request_id=t-1 " in line and " model=mnist-mlp " in line and " round_size=1 " in line


@pytest.mark.parametrize(("access_log", "log_level"), [(False, "info"), (True, "warning")])
def test_the_access_log_can_be_turned_off(repository, capsys, access_log, log_level):
    settings = Settings(model_repository=repository, access_log=access_log, log_level=log_level)
    with TestClient(create_app(settings)) as client:
        assert client.get("/healthz").headers["x-request-id"]
    assert access_lines(capsys) == []


def test_a_path_cannot_forge_a_log_line(repository, capsys):
    with TestClient(create_app(Settings(model_repository=repository, log_format="json"))) as client:
        client.get("/healthz%0A2026-01-01 INFO forged: GET / 200")
    (line,) = access_lines(capsys)
    assert json.loads(line)["path"].startswith("/healthz%0A")


def test_once_the_server_is_stopping_every_answer_says_connection_close(client):
    # Its client then sends its next request on a new connection (refused once the server stops
    # listening), never onto this one as the server closes it.
    assert client.get("/healthz").headers.get("connection") != "close"
    client.app.state.drain.stopping.set()
    for answer in (client.get("/healthz"), client.post("/v1/predict", json={"instances": [[0.5] * 784]})):
        assert answer.headers["connection"] == "close"
