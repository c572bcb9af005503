"""Several worker processes (DROPSERVE_WORKERS=2): /metrics adds up every worker's values,
whichever worker answers the scrape."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from models.artifact import read_manifest
from tests.server import running_server

REQUESTS = 40


def samples(url: str) -> dict[str, dict[tuple, float]]:
    found: dict[str, dict[tuple, float]] = {}
    text = httpx.get(f"{url}/metrics", timeout=10).text  # a new connection: any worker may answer
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return found


def test_metrics_add_up_over_workers(repository: Path, tmp_path: Path):
    with running_server(repository, tmp_path / "server.log", workers="2", access_log="false") as server:
        for _ in range(REQUESTS):  # each on a new connection, so both workers take some
            response = httpx.post(
                f"{server.url}/v1/uncertainty?samples=10", json={"instances": [[0.5] * 784]}
            )
            assert response.status_code == 200
        scrapes = [samples(server.url) for _ in range(6)]
        folder = re.search(r"values kept in (\S+)", server.log_text())
        assert folder, server.log_text()
        writers = {path.stem.rsplit("_", 1)[-1] for path in Path(folder[1]).glob("counter_*.db")}
    assert len(writers) == 2, "both workers should have answered some requests"

    route = (("method", "POST"), ("model", "mnist-mlp"), ("route", "/v1/uncertainty"), ("status", "200"))
    sha256 = read_manifest(repository / "mnist-mlp" / "1").weights_sha256
    info = (("model", "mnist-mlp"), ("sha256", sha256), ("version", "1"))
    for scrape in scrapes:
        assert scrape["dropserve_requests_total"][route] == REQUESTS
        assert scrape["dropserve_mc_samples_count"][(("model", "mnist-mlp"),)] == REQUESTS
        assert scrape["dropserve_model_info"] == {info: 1.0}  # livemax: one series, not one per worker
        assert scrape["dropserve_requests_in_flight"][()] == 1  # the scrape, summed over live workers
    assert not Path(folder[1]).exists(), "python -m service removes its metrics folder at exit"
