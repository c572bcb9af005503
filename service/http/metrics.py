"""Prometheus metrics: traffic, engine timings, and the uncertainty of the answers given.

Every family is named `dropserve_*`. Beside the usual serving figures, each model's answers feed
histograms of predictive entropy and mutual information and a counter of `ood` answers, so that a
dashboard shows uncertainty drifting before anyone knows accuracy dropped.

One process (DROPSERVE_WORKERS=1): the families live in this app's own registry. Several worker
processes: `python -m service` points PROMETHEUS_MULTIPROC_DIR at a fresh folder before the
workers start; each worker writes its values there and /metrics, whichever worker answers it,
adds up every worker's counters and histograms. The two gauges say how they combine across
workers: in-flight requests are summed over live workers, model info is 1 while any live worker
holds that version.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

import numpy as np
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from models.artifact import LoadedModel
from service.engine.engine import JobReport

MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"  # set by `python -m service` when it starts workers
CONTENT_TYPE = CONTENT_TYPE_LATEST

_SECONDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_COMPUTE_SECONDS = (0.0001, 0.00025, *_SECONDS)
_ENTROPY_NATS = (0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 2.5)  # ln(10) = 2.30
_MI_NATS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.5)


class Metrics:
    """The service's metric families, and what feeds them."""

    def __init__(self) -> None:
        self.multiprocess = MULTIPROCESS_DIR in os.environ
        self.registry = CollectorRegistry()
        # In multiprocess mode values go to files, read back at scrape time, never a registry.
        registry = None if self.multiprocess else self.registry
        self.requests = Counter(
            "dropserve_requests",
            "HTTP requests answered, by route template, method, model and status.",
            ["route", "method", "model", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "dropserve_request_duration_seconds",
            "Time from a request's arrival to the end of its answer, by route template and method.",
            ["route", "method"],
            buckets=_SECONDS,
            registry=registry,
        )
        self.in_flight = Gauge(
            "dropserve_requests_in_flight",
            "Requests being served now (summed over live workers).",
            multiprocess_mode="livesum",
            registry=registry,
        )
        self.queue_wait = Histogram(
            "dropserve_queue_wait_seconds",
            "Time an inference job waited, decoded, for its first compute step.",
            buckets=_SECONDS,
            registry=registry,
        )
        self.compute = Histogram(
            "dropserve_compute_seconds",
            "Compute time of one inference job (its own steps), by model and kind.",
            ["model", "kind"],
            buckets=_COMPUTE_SECONDS,
            registry=registry,
        )
        self.round_jobs = Histogram(
            "dropserve_round_jobs",
            "Jobs stepped in one scheduler round: the micro-batch the engine interleaves.",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
            registry=registry,
        )
        self.samples = Histogram(
            "dropserve_mc_samples",
            "MC-dropout passes asked for by one uncertainty request, by model.",
            ["model"],
            buckets=(1, 10, 30, 100, 300, 1000, 3000, 10000),
            registry=registry,
        )
        self.model_info = Gauge(
            "dropserve_model_info",
            "1 for each model version served (by any live worker), with its weights' sha256.",
            ["model", "version", "sha256"],
            multiprocess_mode="livemax",
            registry=registry,
        )
        self.predictive_entropy = Histogram(
            "dropserve_predictive_entropy_nats",
            "Predictive entropy H[p̄] of each input answered with uncertainty, by model and version.",
            ["model", "version"],
            buckets=_ENTROPY_NATS,
            registry=registry,
        )
        self.mutual_information = Histogram(
            "dropserve_mutual_information_nats",
            "Mutual information (epistemic uncertainty) of each input answered with uncertainty.",
            ["model", "version"],
            buckets=_MI_NATS,
            registry=registry,
        )
        self.ood = Counter(
            "dropserve_ood",
            "Inputs answered `ood: true` (mutual information above the model's calibrated threshold).",
            ["model", "version"],
            registry=registry,
        )
        self._children: dict[tuple[object, tuple[str, ...]], Any] = {}  # see _child
        self._served: set[tuple[str, str, str]] = set()
        self.model_names: frozenset[str] = frozenset()  # of the models served, for labels

    def _child(self, family: Any, *labels: str) -> Any:
        """`family.labels(*labels)`, remembered: the label values are bounded (route templates,
        methods, statuses, models served), and looking a child up costs every request a few us."""
        key = (family, labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = family.labels(*labels)
        return child

    def request_done(self, route: str, method: str, model: str, status: int, seconds: float) -> None:
        self._child(self.requests, route, method, model, str(status)).inc()
        self._child(self.latency, route, method).observe(seconds)

    def round_done(self, jobs: int) -> None:
        self.round_jobs.observe(jobs)

    def job_done(self, report: JobReport) -> None:
        name = report.loaded.manifest.name
        self.queue_wait.observe(report.timings.queue_wait_s)
        self._child(self.compute, name, "uncertainty" if report.samples else "predict").observe(
            report.timings.compute_s
        )
        result = report.result
        if result is None:
            return
        version = str(report.loaded.manifest.version)
        self._child(self.samples, name).observe(report.samples)
        entropy = self._child(self.predictive_entropy, name, version)
        for value in result.summary.predictive_entropy.tolist():
            entropy.observe(value)
        information = self._child(self.mutual_information, name, version)
        for value in result.summary.mutual_information.tolist():
            information.observe(value)
        flagged = np.count_nonzero(result.ood)
        ood = self._child(self.ood, name, version)  # made at the first answer: the series exists from 0
        if flagged:
            ood.inc(flagged)

    def models_changed(self, loaded: Iterable[LoadedModel]) -> None:
        """Model info for the versions now held: 1 for each, 0 for those no longer held."""
        served = {(m.manifest.name, str(m.manifest.version), m.manifest.weights_sha256) for m in loaded}
        for labels in self._served - served:
            self.model_info.labels(*labels).set(0)
        for labels in served:
            self.model_info.labels(*labels).set(1)
        self._served = served
        self.model_names = frozenset(name for name, _, _ in served)

    def exposition(self) -> bytes:
        """The text format, every worker's values added up in multiprocess mode."""
        if not self.multiprocess:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        return generate_latest(registry)

    def close(self) -> None:
        """At a worker's exit: its live gauges no longer count."""
        if self.multiprocess:
            mark_process_dead(os.getpid())
