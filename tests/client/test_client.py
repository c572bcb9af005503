"""The Python client against a real server: dataclasses back, the error envelope as exceptions,
503 retried after Retry-After (bounded)."""

from __future__ import annotations

import asyncio
import re
import threading
import time
from pathlib import Path

import httpx
import pytest

from client import (
    AsyncClient,
    Client,
    DropserveError,
    InvalidValue,
    NotFound,
    PredictResponse,
    Unauthorized,
    Unavailable,
    UncertaintyResponse,
)
from tests.client.conftest import ADMIN_KEY, API_KEY, DIGIT
from tests.conftest import publish_tiny
from tests.server import running_server

REQUEST_ID = re.compile(r"[0-9a-f]{32}")


def test_sync_client(server):
    with Client(server.url, api_key=API_KEY) as client:
        predicted = client.predict(DIGIT, DIGIT.read_bytes())
        assert isinstance(predicted, PredictResponse)
        assert (predicted.model.name, predicted.model.version) == ("mnist-mlp", 1)
        assert len(predicted.predictions) == 2 and predicted.predictions[0] == predicted.predictions[1]
        first = predicted.predictions[0]
        assert first.probabilities[first.label] == first.confidence
        assert sum(first.probabilities) == pytest.approx(1.0, abs=1e-5)
        assert REQUEST_ID.fullmatch(predicted.request_id or "")

        answer = client.uncertainty(DIGIT, samples=30, seed=3)
        assert isinstance(answer, UncertaintyResponse)
        assert (answer.samples, answer.seed) == (30, 3)
        again = client.uncertainty(DIGIT, samples=30, seed=3)
        assert again.predictions == answer.predictions  # the same seed, the same statistics
        assert answer.predictions[0].mutual_information >= 0
        assert answer.predictions[0].sample_probabilities is None

        json_answer = client.uncertainty(
            instances=[[0.5] * 784, [[0.0] * 28] * 28], samples=5, seed=1, return_samples=True
        )
        assert len(json_answer.predictions) == 2
        assert len(json_answer.predictions[0].sample_probabilities or []) == 5

        (model,) = client.models()
        assert (model.name, model.versions, model.default_version, model.ready) == ("mnist-mlp", [1], 1, True)
        assert client.metadata("mnist-mlp")["classes"] == [str(d) for d in range(10)]
        assert client.metadata("mnist-mlp", version=1)["version"] == 1
        assert client.ready()
        pinned = client.predict(DIGIT, model="mnist-mlp", version=1)
        assert pinned.predictions[0].label == first.label
        assert pinned.predictions[0].probabilities == pytest.approx(first.probabilities, abs=1e-6)


def test_async_client(server):
    async def scenario() -> None:
        async with AsyncClient(server.url, api_key=API_KEY) as client:
            predicted, uncertain = await asyncio.gather(
                client.predict(DIGIT), client.uncertainty(DIGIT, samples=30, seed=3, model="mnist-mlp")
            )
            assert predicted.model.name == "mnist-mlp" and len(predicted.predictions) == 1
            assert (uncertain.samples, uncertain.seed) == (30, 3)
            assert [m.name for m in await client.models()] == ["mnist-mlp"]
            assert (await client.metadata("mnist-mlp"))["name"] == "mnist-mlp"
            assert await client.ready()
            with pytest.raises(NotFound):
                await client.predict(DIGIT, model="nope")

    asyncio.run(scenario())


def test_the_error_envelope_becomes_an_exception(server):
    with Client(server.url, api_key=API_KEY) as client:
        with pytest.raises(NotFound) as missing:
            client.predict(DIGIT, model="nope")
        assert missing.value.status == 404 and missing.value.code == "not_found"
        assert "unknown model 'nope'" in missing.value.message
        assert REQUEST_ID.fullmatch(missing.value.request_id or "")
        assert str(missing.value).startswith("404 not_found: unknown model 'nope'")

        with pytest.raises(InvalidValue, match="samples must be between 1 and 1000"):
            client.uncertainty(DIGIT, samples=5000)
        with pytest.raises(DropserveError) as not_an_image:
            client.predict(b"these bytes are no image")
        assert not_an_image.value.status in (415, 422)
        with pytest.raises(ValueError, match="images or instances"):
            client.predict()

    with Client(server.url, api_key="") as anonymous, pytest.raises(Unauthorized):
        anonymous.predict(DIGIT)
    with Client(server.url, api_key=API_KEY) as client, pytest.raises(Unauthorized):
        client.reload("mnist-mlp")  # no admin key


def test_reload_through_the_client(server):
    with Client(server.url, api_key=API_KEY, admin_key=ADMIN_KEY) as client:
        answer = client.reload("mnist-mlp")
    assert answer.name == "mnist-mlp" and answer.serving == [1] and answer.default_version == 1
    assert [(v.version, v.status) for v in answer.versions] == [(1, "kept")]


def test_the_url_and_key_come_from_the_environment(server, monkeypatch):
    monkeypatch.setenv("DROPSERVE_URL", server.url)
    monkeypatch.setenv("DROPSERVE_API_KEY", API_KEY)
    with Client() as client:
        assert client.url == server.url
        assert client.predict(DIGIT).model.name == "mnist-mlp"


def overloaded_then(answers: list[httpx.Response]) -> tuple[httpx.MockTransport, list[float]]:
    """A transport answering `answers` in turn, and the times it was called at."""
    calls: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(time.monotonic())
        return answers[len(calls) - 1]

    return httpx.MockTransport(handler), calls


def busy(retry_after: str) -> httpx.Response:
    envelope = {"error": {"code": "unavailable", "message": "server is at capacity", "request_id": "r-1"}}
    return httpx.Response(503, json=envelope, headers={"retry-after": retry_after})


def test_503_is_retried_after_retry_after():
    ok = httpx.Response(200, json={"model": {"name": "m", "version": 1}, "predictions": []})
    transport, calls = overloaded_then([busy("0.2"), busy("0"), ok])
    with Client("http://dropserve.test", transport=transport) as client:
        assert client.predict(instances=[[0.0] * 784]).predictions == []
    assert len(calls) == 3
    assert calls[1] - calls[0] >= 0.2  # as Retry-After asked
    assert calls[2] - calls[1] < 0.5  # Retry-After: 0 is no wait


def test_retries_are_bounded_in_number_and_wait():
    transport, calls = overloaded_then([busy("3600")] * 3)
    started = time.monotonic()
    client = Client("http://dropserve.test", transport=transport, retries=2, max_retry_wait_s=0.1)
    with client, pytest.raises(Unavailable) as refused:
        client.predict(instances=[[0.0] * 784])
    assert len(calls) == 3  # the first try and two retries
    assert time.monotonic() - started < 2  # each wait capped at 0.1 s, not an hour
    assert refused.value.retry_after_s == 3600 and refused.value.request_id == "r-1"


def test_the_async_client_retries_too():
    ok = httpx.Response(200, json={"models": [], "default_model": "m"})
    calls: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return busy("0") if len(calls) == 1 else ok

    async def scenario() -> None:
        async with AsyncClient("http://dropserve.test", transport=httpx.MockTransport(handler)) as client:
            assert await client.models() == []

    asyncio.run(scenario())
    assert len(calls) == 2


def test_a_real_server_s_503_is_retried_until_a_model_is_loaded(tmp_path: Path):
    """A server without a model answers 503 with Retry-After; polling finds the model published
    meanwhile, and the client's retries get the answer."""
    repository = tmp_path / "artifacts"
    with running_server(
        repository, tmp_path / "server.log", ready="/healthz", poll_interval_s="0.2"
    ) as server:
        with (
            Client(server.url, retries=1, max_retry_wait_s=0.05) as impatient,
            pytest.raises(Unavailable) as e,
        ):
            impatient.predict(DIGIT)
        assert e.value.retry_after_s == 5 and "no model" in e.value.message

        publisher = threading.Timer(0.5, publish_tiny, args=(repository,))
        publisher.start()
        started = time.monotonic()
        with Client(server.url, retries=40, max_retry_wait_s=0.1) as patient:
            answer = patient.predict(DIGIT)
        publisher.join()
    assert answer.model.name == "mnist-mlp"
    assert time.monotonic() - started >= 0.5  # it was answered only after the model appeared
