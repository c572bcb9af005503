"""Integration: /metrics of a server with a really trained model sees out-of-distribution inputs.
Fashion-MNIST images, far from the digits it learned, move the OOD counter and the mutual-
information histogram much more than MNIST test digits do."""

from __future__ import annotations

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from training.datasets import load_dataset

pytestmark = pytest.mark.integration
LABELS = (("model", "mnist-mlp"), ("version", "1"))
IMAGES = 300


def scrape(url: str) -> dict[str, float]:
    """The mnist-mlp version 1 samples: {sample name, with its bucket's le if any: value}."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = dict(sample.labels)
            le = labels.pop("le", None)
            if tuple(sorted(labels.items())) == LABELS:
                found[sample.name if le is None else f"{sample.name}[le={le}]"] = sample.value
    return found


def ask(url: str, images: np.ndarray) -> list[dict]:
    """Uncertainty for uint8 28x28 `images`, as JSON instances in [0, 1]."""
    instances = (images.reshape(len(images), 784) / 255).round(4).tolist()
    predictions = []
    with httpx.Client(base_url=url, timeout=60) as client:
        for start in range(0, len(instances), 100):
            body = {"instances": instances[start : start + 100], "samples": 50, "seed": 0}
            response = client.post("/v1/uncertainty", json=body)
            assert response.status_code == 200, response.text
            predictions += response.json()["predictions"]
    return predictions


def moved(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {name: after.get(name, 0.0) - before.get(name, 0.0) for name in after}


def test_out_of_distribution_inputs_move_the_ood_counter_and_mi_histogram(server_url):
    digits = load_dataset("mnist").x_test[:IMAGES]
    clothes = load_dataset("fashion-mnist").x_test[:IMAGES]

    start = scrape(server_url)
    on_digits = ask(server_url, digits)
    after_digits = scrape(server_url)
    on_clothes = ask(server_url, clothes)
    after_clothes = scrape(server_url)
    digits_moved, clothes_moved = moved(start, after_digits), moved(after_digits, after_clothes)

    for answers, delta in ((on_digits, digits_moved), (on_clothes, clothes_moved)):
        assert delta["dropserve_ood_total"] == sum(p["ood"] for p in answers)
        assert delta["dropserve_mutual_information_nats_count"] == IMAGES
        assert delta["dropserve_predictive_entropy_nats_count"] == IMAGES
        mutual_information = sum(p["mutual_information"] for p in answers)
        assert delta["dropserve_mutual_information_nats_sum"] == pytest.approx(mutual_information, rel=1e-9)

    # The threshold is the 95th percentile of validation MI: few digits pass it, many clothes do.
    flagged = (digits_moved["dropserve_ood_total"], clothes_moved["dropserve_ood_total"])
    assert flagged[0] < 0.15 * IMAGES and flagged[1] > max(3 * flagged[0], 0.2 * IMAGES), flagged
    assert (
        clothes_moved["dropserve_mutual_information_nats_sum"]
        > 3 * digits_moved["dropserve_mutual_information_nats_sum"]
    )
    # A dashboard sees the shift in the buckets: far fewer clothes than digits under 0.025 nats.
    low = "dropserve_mutual_information_nats_bucket[le=0.025]"
    assert clothes_moved[low] / IMAGES < 0.5 * digits_moved[low] / IMAGES
