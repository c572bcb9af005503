"""Micro-batching behaviour: own answers back, own seeds kept, no needless waits, bounded queue."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest
import torch

from models.artifact import load_artifact
from service import inference
from service.batching import Job, MicroBatcher
from service.errors import ApiError
from service.runner import InferenceRunner
from service.settings import Settings
from service.shedding import Admission

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def loaded(repository):
    return load_artifact(repository / "mnist-mlp" / "1")


def pixels(rows: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random((rows, 784), dtype=np.float32)


def batcher(compute: Any = inference.compute, **overrides: Any) -> MicroBatcher:
    options = {"max_rows": 64, "max_wait_s": 0.0, "queue_max": 100, "queue_wait_s": 30.0, **overrides}
    options.setdefault("thread_setup", lambda: torch.set_num_threads(1))  # as the service does
    return MicroBatcher(compute, **options)


async def serve(b: MicroBatcher, *jobs: Job) -> list[Any]:
    b.start()
    try:
        return await asyncio.wait_for(asyncio.gather(*(b.submit(job) for job in jobs)), 10)
    finally:
        await b.stop()


def test_concurrent_predictions_share_a_batch_and_each_gets_its_own_answer(loaded):
    inputs = [pixels(1 + i % 3, seed=i) for i in range(12)]

    async def run() -> tuple[list[Any], MicroBatcher]:
        b = batcher()
        return await serve(b, *(Job(loaded, x, None) for x in inputs)), b

    answers, b = asyncio.run(run())
    assert max(b.batch_sizes) > 1  # they did share forward passes
    for x, answer in zip(inputs, answers, strict=True):
        assert np.array_equal(answer, inference.predict(loaded, x))  # exactly the lone answer


def test_an_uncertainty_request_keeps_its_seed_answer_whatever_shares_its_batch(loaded):
    mine = pixels(2, seed=1)

    async def run(*others: tuple[np.ndarray, int]) -> Any:
        b = batcher()
        jobs = [Job(loaded, x, 100, seed=seed) for x, seed in others]
        answers = await serve(b, *jobs, Job(loaded, mine, 100, seed=42, return_samples=True))
        assert sum(b.batch_sizes.values()) == 1  # one batch held them all
        return answers[-1]

    alone = asyncio.run(run())
    crowded = asyncio.run(run(*((pixels(1 + i % 2, seed=10 + i), i) for i in range(5))))
    big = asyncio.run(run((pixels(40, seed=20), 3)))  # 42 rows: other reduction shapes around it
    for other in (crowded, big):
        for field in dataclasses.fields(alone.summary):
            mine_alone, mine_crowded = getattr(alone.summary, field.name), getattr(other.summary, field.name)
            assert np.array_equal(mine_alone, mine_crowded), field.name
        assert np.array_equal(alone.sample_probabilities, other.sample_probabilities)
    assert crowded.seed == 42 and crowded.samples == 100


def test_mixed_kinds_and_sample_counts_in_one_flush_each_get_the_right_answer(loaded):
    x = pixels(1, seed=3)

    async def run() -> list[Any]:
        return await serve(
            batcher(), Job(loaded, x, None), Job(loaded, x, 10, seed=1), Job(loaded, x, 30, seed=1)
        )

    predicted, ten, thirty = asyncio.run(run())
    assert predicted.shape == (1, 10)
    assert ten.samples == 10 and thirty.samples == 30


def test_a_lone_client_never_waits_for_company(loaded):
    """At concurrency 1 every batch leaves at once ("idle"), even with a long configured wait."""

    async def run() -> MicroBatcher:
        b = batcher(max_wait_s=60.0)
        b.start()
        try:
            for i in range(5):
                await asyncio.wait_for(b.submit(Job(loaded, pixels(1, seed=i), None)), 5)
        finally:
            await b.stop()
        return b

    b = asyncio.run(run())
    assert dict(b.flushes) == {"idle": 5}


def test_under_concurrent_load_a_batch_waits_for_more_up_to_the_limit(loaded):
    async def run() -> MicroBatcher:
        b = batcher(max_wait_s=0.05, max_rows=4)
        b.start()
        try:
            await asyncio.gather(*(b.submit(Job(loaded, pixels(1, seed=i), None)) for i in range(6)))
            # traffic was concurrent, so this lone request waits for company, then leaves
            await asyncio.wait_for(b.submit(Job(loaded, pixels(1, seed=9), None)), 5)
        finally:
            await b.stop()
        return b

    b = asyncio.run(run())
    assert dict(b.flushes) == {"full": 1, "wait": 2}  # 4 + 2 (waited), then the lone one waited


class Gate:
    """A compute that holds the inference thread until released, then computes for real."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.entered = threading.Event()

    def __call__(self, jobs: list[Job]) -> list[Any]:
        self.entered.set()
        self.release.wait(10)
        return inference.compute(jobs)


def test_a_full_queue_answers_503_with_retry_after(loaded):
    gate = Gate()

    async def run() -> ApiError:
        b = batcher(gate, queue_max=2)
        b.start()
        try:
            first = asyncio.ensure_future(b.submit(Job(loaded, pixels(1, 0), None)))
            await asyncio.get_running_loop().run_in_executor(None, gate.entered.wait, 5)
            second = asyncio.ensure_future(b.submit(Job(loaded, pixels(1, 1), None)))
            await asyncio.sleep(0)
            with pytest.raises(ApiError) as refused:
                await b.submit(Job(loaded, pixels(1, 2), None))
            gate.release.set()
            await asyncio.wait_for(asyncio.gather(first, second), 5)  # the admitted ones finish
            return refused.value
        finally:
            gate.release.set()
            await b.stop()

    error = asyncio.run(run())
    assert error.status == 503 and error.headers == {"Retry-After": "1"}
    assert "capacity" in error.message


def test_requests_that_waited_past_the_queue_bound_get_503_with_retry_after(loaded):
    gate = Gate()

    async def run() -> list[Any]:
        b = batcher(gate, queue_wait_s=0.01)
        b.start()
        try:
            first = asyncio.ensure_future(b.submit(Job(loaded, pixels(1, 0), None)))
            await asyncio.get_running_loop().run_in_executor(None, gate.entered.wait, 5)
            late = asyncio.ensure_future(b.submit(Job(loaded, pixels(1, 1), None)))
            await asyncio.sleep(0.05)  # it queues behind the held batch past the 10 ms bound
            gate.release.set()
            return await asyncio.wait_for(asyncio.gather(first, late, return_exceptions=True), 5)
        finally:
            gate.release.set()
            await b.stop()

    answered, shed = asyncio.run(run())
    assert isinstance(answered, np.ndarray)
    assert isinstance(shed, ApiError) and shed.status == 503 and shed.headers == {"Retry-After": "1"}


def test_the_wait_counts_from_the_request_s_arrival_not_its_submission(loaded):
    async def run() -> list[Any]:
        b = batcher(queue_wait_s=0.05)
        arrived_long_ago = Job(loaded, pixels(1, 0), None, waiting_since=time.monotonic() - 0.2)
        just_arrived = Job(loaded, pixels(1, 1), None)
        return await serve_outcomes(b, arrived_long_ago, just_arrived)

    shed, answered = asyncio.run(run())
    assert isinstance(shed, ApiError) and shed.status == 503 and "waited over 50 ms" in shed.message
    assert isinstance(answered, np.ndarray)


async def serve_outcomes(b: MicroBatcher, *jobs: Job) -> list[Any]:
    b.start()
    try:
        return await asyncio.wait_for(
            asyncio.gather(*(b.submit(j) for j in jobs), return_exceptions=True), 10
        )
    finally:
        await b.stop()


def test_a_lone_request_is_answered_on_the_event_loop_and_others_through_the_queue(loaded):
    threads: list[str] = []

    def recording(jobs: list[Job]) -> list[Any]:
        threads.append(threading.current_thread().name)
        return inference.compute(jobs)

    admission = Admission(limit=10)
    runner = InferenceRunner(Settings(inference_process=False), admission)
    runner.batcher.compute = recording

    async def run() -> list[Any]:
        await runner.start()
        try:
            admission.in_flight = 1  # this request alone
            alone = await runner.predict(loaded, pixels(1, 0))
            admission.in_flight = 2  # another one in flight: they may share a batch
            accompanied = await runner.predict(loaded, pixels(1, 0))
            admission.in_flight = 1  # alone, but 16 images x 100 passes: too long to block the loop
            await runner.uncertainty(loaded, pixels(16, 2), 100, 0, False)
            return [alone, accompanied]
        finally:
            await runner.stop()

    alone, accompanied = asyncio.run(run())
    assert threads == [threading.current_thread().name, "inference", "inference"]
    assert np.array_equal(alone, accompanied)


def test_api_concurrent_requests_get_their_own_answers(client):
    inputs = [pixels(1, seed=i)[0].tolist() for i in range(16)]
    alone = [client.post("/v1/predict", json={"instances": [x]}).json() for x in inputs]
    with ThreadPoolExecutor(8) as pool:
        together = list(
            pool.map(lambda x: client.post("/v1/predict", json={"instances": [x]}).json(), inputs)
        )
    assert together == alone


def test_api_full_queue_is_503_with_retry_after_before_the_body_is_read(client):
    admission = client.app.state.admission
    admission.in_flight = admission.limit  # as if that many were being answered
    try:
        answer = client.post("/v1/predict", json={"instances": [[0.0] * 784]})
    finally:
        admission.in_flight = 0
    assert answer.status_code == 503 and answer.headers["retry-after"] == "1"
    assert answer.json()["error"]["code"] == "unavailable"
    assert client.post("/v1/predict", json={"instances": [[0.0] * 784]}).status_code == 200


def test_api_bad_input_is_still_a_clear_4xx(client):
    answer = client.post("/v1/uncertainty", json={"instances": [[2.0] * 784]})
    assert answer.status_code == 422 and "[0, 1]" in answer.json()["error"]["message"]
    assert (
        client.post("/v1/predict", content=b"{", headers={"content-type": "application/json"}).status_code
        == 400
    )


def test_stopping_answers_every_queued_request_first(loaded):
    gate = Gate()

    async def run() -> list[Any]:
        b = batcher(gate, max_rows=1)
        b.start()
        first = asyncio.ensure_future(b.submit(Job(loaded, pixels(1, 0), None)))
        await asyncio.get_running_loop().run_in_executor(None, gate.entered.wait, 5)
        queued = [asyncio.ensure_future(b.submit(Job(loaded, pixels(1, i), None))) for i in (1, 2, 3)]
        await asyncio.sleep(0)
        stopping = asyncio.ensure_future(b.stop())
        gate.release.set()
        await asyncio.wait_for(stopping, 5)
        return await asyncio.gather(first, *queued)

    answers = asyncio.run(run())
    assert len(answers) == 4 and all(isinstance(a, np.ndarray) and a.shape == (1, 10) for a in answers)
