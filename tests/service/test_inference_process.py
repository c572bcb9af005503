"""The inference process: the same answers as in the server, a crashed process is replaced, a
failing batch is reported, and only batches of several requests are sent to it.

Each test starts a real `python -m service.worker` (it imports torch: a few seconds).
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from models.artifact import LoadedModel, load_artifact
from service import inference
from service.batching import Job
from service.errors import ApiError
from service.inference_process import InferenceError, InferenceProcess
from service.runner import InferenceRunner
from service.settings import Settings
from tests.conftest import publish_tiny

pytestmark = pytest.mark.usefixtures("one_thread")


def pixels(rows: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random((rows, 784), dtype=np.float32)


def make_jobs(loaded: object, *specs: tuple[int, int | None, int, bool]) -> list[Job]:
    """Jobs of (rows, samples, seed, return_samples), made where a Job can make its future."""

    async def build() -> list[Job]:
        return [
            Job(loaded, pixels(rows, seed), samples, seed, wanted) for rows, samples, seed, wanted in specs
        ]  # type: ignore[arg-type]

    return asyncio.run(build())


@pytest.fixture
def process(repository: Path) -> Iterator[InferenceProcess]:
    started = InferenceProcess(Settings(model_repository=repository))
    started.start()
    yield started
    started.stop()


@pytest.fixture
def loaded(repository: Path) -> LoadedModel:
    return load_artifact(repository / "mnist-mlp" / "1")


def test_batches_through_the_process_get_the_in_process_answers(
    process: InferenceProcess, loaded: LoadedModel
):
    predictions = make_jobs(loaded, (1, None, 0, False), (3, None, 1, False), (2, None, 2, False))
    for remote, local in zip(process(predictions), inference.compute(predictions), strict=True):
        assert np.array_equal(remote, local)

    passes = make_jobs(loaded, (2, 30, 7, True), (1, 30, 8, False), (3, 30, 9, True))
    for remote, local in zip(process(passes), inference.compute(passes), strict=True):
        assert remote.seed == local.seed and remote.samples == local.samples == 30
        for field in dataclasses.fields(local.summary):
            assert np.array_equal(getattr(remote.summary, field.name), getattr(local.summary, field.name))
        if local.sample_probabilities is None:
            assert remote.sample_probabilities is None
        else:
            assert np.array_equal(remote.sample_probabilities, local.sample_probabilities)


def wait_until_dead(process: InferenceProcess) -> None:
    popen = process._process
    assert popen is not None
    deadline = time.monotonic() + 10
    while popen.poll() is None:
        assert time.monotonic() < deadline, "the inference process outlived SIGKILL"
        time.sleep(0.01)


def test_a_crashed_process_costs_its_batch_a_503_and_the_next_batch_gets_a_new_one(
    repository: Path, loaded: LoadedModel
):
    process = InferenceProcess(Settings(model_repository=repository))
    process.start()
    try:
        jobs = make_jobs(loaded, (1, None, 0, False), (2, None, 1, False))
        expected = process(jobs)
        crashed = process.pid
        assert crashed is not None
        os.kill(crashed, signal.SIGKILL)
        wait_until_dead(process)

        with pytest.raises(ApiError) as refused:
            process(jobs)
        assert refused.value.status == 503
        assert refused.value.headers == {"Retry-After": "1"}

        again = process(jobs)
        assert all(np.array_equal(a, b) for a, b in zip(again, expected, strict=True))
        replacement = process.pid
        assert replacement not in (None, crashed)
    finally:
        process.stop()
    assert process.pid is None
    with pytest.raises(ProcessLookupError):  # stop() ended and reaped it
        os.kill(replacement, 0)


def test_the_process_outlives_signals_to_its_group_and_ends_when_the_server_lets_go(
    repository: Path, loaded: LoadedModel
):
    process = InferenceProcess(Settings(model_repository=repository))
    process.start()
    try:
        pid = process.pid
        assert pid is not None
        for sent in (signal.SIGINT, signal.SIGTERM):  # what Ctrl-C or `kill -- -PGID` deliver
            os.kill(pid, sent)
        jobs = make_jobs(loaded, (1, None, 0, False), (2, None, 1, False))
        for remote, local in zip(process(jobs), inference.compute(jobs), strict=True):
            assert np.array_equal(remote, local)
        assert process.pid == pid
    finally:
        process.stop()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_the_process_holds_exactly_the_versions_it_is_told_to(repository: Path):
    first = repository / "mnist-mlp" / "1"
    second = publish_tiny(repository, seed=1)
    process = InferenceProcess(Settings(model_repository=repository))
    process.start()
    try:
        assert process.keep_loaded([first, second]) == sorted([str(first), str(second)])
        assert process.keep_loaded([second]) == [str(second)]  # the first was let go
    finally:
        process.stop()


def test_a_batch_that_fails_in_the_process_raises_its_error_and_the_process_serves_on(
    process: InferenceProcess, loaded: LoadedModel, tmp_path: Path
):
    missing = dataclasses.replace(loaded, path=tmp_path / "gone" / "1")
    with pytest.raises(InferenceError, match="ArtifactError"):
        process(make_jobs(missing, (1, None, 0, False), (1, None, 1, False)))
    jobs = make_jobs(loaded, (1, None, 0, False), (1, None, 1, False))
    for remote, local in zip(process(jobs), inference.compute(jobs), strict=True):
        assert np.array_equal(remote, local)


def test_a_lone_request_runs_in_the_server_and_a_batch_of_several_in_the_process(loaded: LoadedModel):
    calls: list[int] = []

    def recording_process(jobs: list[Job]) -> list[object]:
        calls.append(len(jobs))
        return inference.compute(jobs)

    runner = InferenceRunner(Settings(inference_process=False))
    runner.process = recording_process  # type: ignore[assignment]
    lone = make_jobs(loaded, (3, None, 0, False))
    assert np.array_equal(runner._compute(lone)[0], inference.compute(lone)[0])
    assert calls == []
    runner._compute(make_jobs(loaded, (1, 20, 0, False), (1, 20, 1, False)))
    assert calls == [2]
