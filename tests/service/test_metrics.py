"""GET /metrics: every family after traffic, and numbers that follow the answers given."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from models.artifact import read_manifest
from service.engine.engine import Engine, JobReport

FAMILIES = {
    "dropserve_requests": "counter",
    "dropserve_request_duration_seconds": "histogram",
    "dropserve_requests_in_flight": "gauge",
    "dropserve_queue_wait_seconds": "histogram",
    "dropserve_compute_seconds": "histogram",
    "dropserve_round_jobs": "histogram",
    "dropserve_mc_samples": "histogram",
    "dropserve_model_info": "gauge",
    "dropserve_predictive_entropy_nats": "histogram",
    "dropserve_mutual_information_nats": "histogram",
    "dropserve_ood": "counter",
}


def scrape(client) -> dict[str, dict[tuple, float]]:
    """{sample name: {sorted label items: value}} of /metrics, parsed by prometheus_client."""
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def value(samples, name: str, **labels: str) -> float:
    return samples.get(name, {}).get(tuple(sorted(labels.items())), 0.0)


def test_every_family_is_there_after_traffic(client, digit_png, repository):
    assert client.post("/v1/predict", files={"file": ("d.png", digit_png, "image/png")}).status_code == 200
    assert client.post("/v1/uncertainty?samples=20", content=digit_png, headers={"content-type": "image/png"})
    assert client.post("/v1/models/mnist-mlp/predict", json={"instances": [[2.0] * 784]}).status_code == 422
    assert client.post("/v1/predict", json={"instances": [[2.0] * 784]}).status_code == 422

    text = client.get("/metrics").text
    families = {family.name: family.type for family in text_string_to_metric_families(text)}
    assert FAMILIES.items() <= families.items()

    samples = scrape(client)
    ok = {"method": "POST", "model": "mnist-mlp", "status": "200"}
    assert value(samples, "dropserve_requests_total", route="/v1/predict", **ok) == 1
    assert value(samples, "dropserve_requests_total", route="/v1/uncertainty", **ok) == 1
    invalid = {"route": "/v1/models/{name}/predict", "method": "POST", "model": "mnist-mlp", "status": "422"}
    assert value(samples, "dropserve_requests_total", **invalid) == 1
    # the default route's refusal counts under the model it resolved, as the named route's does
    assert value(samples, "dropserve_requests_total", **{**invalid, "route": "/v1/predict"}) == 1
    assert value(samples, "dropserve_request_duration_seconds_count", route="/v1/predict", method="POST") == 2
    assert value(samples, "dropserve_requests_in_flight") == 1  # the scrape itself
    assert value(samples, "dropserve_queue_wait_seconds_count") == 2  # the two answered jobs
    assert value(samples, "dropserve_compute_seconds_count", model="mnist-mlp", kind="predict") == 1
    assert value(samples, "dropserve_compute_seconds_count", model="mnist-mlp", kind="uncertainty") == 1
    assert value(samples, "dropserve_round_jobs_count") >= 1
    assert value(samples, "dropserve_mc_samples_sum", model="mnist-mlp") == 20
    sha256 = read_manifest(repository / "mnist-mlp" / "1").weights_sha256
    assert value(samples, "dropserve_model_info", model="mnist-mlp", version="1", sha256=sha256) == 1


def test_uncertainty_histograms_and_ood_counter_follow_the_answers(client):
    rng = np.random.default_rng(0)
    instances = rng.random((6, 784)).round(3).tolist()
    answer = client.post("/v1/uncertainty", json={"instances": instances, "samples": 50, "seed": 1}).json()
    predictions = answer["predictions"]

    samples = scrape(client)
    labels = {"model": "mnist-mlp", "version": "1"}
    assert value(samples, "dropserve_mutual_information_nats_count", **labels) == 6
    mutual_information = sum(p["mutual_information"] for p in predictions)
    assert abs(value(samples, "dropserve_mutual_information_nats_sum", **labels) - mutual_information) < 1e-9
    entropy = sum(p["predictive_entropy"] for p in predictions)
    assert abs(value(samples, "dropserve_predictive_entropy_nats_sum", **labels) - entropy) < 1e-9
    flagged = sum(p["ood"] for p in predictions)
    assert value(samples, "dropserve_ood_total", **labels) == flagged
    assert 0 < flagged < 6  # the tiny model's 0.05-nat threshold splits these inputs


def test_a_client_s_model_name_is_never_a_label(client):
    for name in ("nope", "x" * 300):
        assert client.post(f"/v1/models/{name}/predict", json={"instances": [[0.0] * 784]}).status_code == 404
    models = {dict(labels).get("model") for labels in scrape(client)["dropserve_requests_total"]}
    assert models <= {"", "mnist-mlp"}


class Recorder:
    """An engine observer that keeps what it hears."""

    def __init__(self) -> None:
        self.rounds: list[int] = []
        self.jobs: list[JobReport] = []
        self.models: list[list] = []

    def round_done(self, jobs: int) -> None:
        self.rounds.append(jobs)

    def job_done(self, report: JobReport) -> None:
        self.jobs.append(report)

    def models_changed(self, loaded: list) -> None:
        self.models.append(loaded)


def test_the_engine_reports_each_job_s_round_queue_wait_and_compute(repository):
    """Jobs handed in together share a round: each report names its micro-batch and its costs."""
    recorder = Recorder()

    async def scenario() -> None:
        engine = Engine(repository, "cpu", 64, 10.0, 60.0, 0.5, observer=recorder)
        await engine.start()
        loaded = engine.registry.get("mnist-mlp")
        pixels = np.full((2, 784), 0.5, dtype=np.float32)

        def busy() -> Iterator[None]:  # keeps the engine busy for two rounds, so the rest queue
            yield
            yield

        blocker = asyncio.ensure_future(engine.scheduler.run(busy()))
        await asyncio.sleep(0)  # its first step ran at once (an idle engine's round of one)
        await asyncio.gather(
            engine.predict(loaded, pixels),
            *(engine.uncertainty(loaded, pixels, 30, s, False) for s in range(4)),
        )
        await blocker
        await engine.stop()

    asyncio.run(scenario())
    assert recorder.rounds[0] == 1  # the blocker's first step, at once
    assert 6 in recorder.rounds  # then the blocker and the five together
    assert [len(models) for models in recorder.models] == [1]  # the start's load
    assert sorted(report.samples for report in recorder.jobs) == [0, 30, 30, 30, 30]
    for report in recorder.jobs:
        assert report.timings.round_size == 6 and report.timings.steps >= 1
        assert report.timings.queue_wait_s >= 0 and report.timings.compute_s > 0
        assert report.instances == 2 and report.loaded.manifest.version == 1
        assert (report.result is None) == (report.samples == 0)
