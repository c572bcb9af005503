"""The engine without HTTP: answers that do not depend on what shares the engine, and its bounds."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from models.artifact import LoadedModel, load_artifact, save_artifact
from models.network import DropoutMLP
from models.spec import Manifest, MLPSpec, Normalization
from service.engine.compute import Steps
from service.engine.engine import Engine
from service.engine.errors import Overloaded, TimedOut
from service.engine.scheduler import Scheduler
from tests.conftest import publish_tiny

# The paper model's real widths (Srivastava et al. 2014): input dropout 0.2, hidden dropout 0.5.
PAPER_SPEC = MLPSpec(hidden_sizes=(1024, 1024), input_dropout=0.2, hidden_dropout=0.5)


@pytest.fixture(scope="module")
def paper_model(tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    torch.manual_seed(0)
    manifest = Manifest("paper", PAPER_SPEC, Normalization(), [str(d) for d in range(10)])
    root = tmp_path_factory.mktemp("artifacts")
    return load_artifact(save_artifact(root, DropoutMLP(PAPER_SPEC).eval(), manifest))


def engine_for(repository: Path, **bounds: float) -> Engine:
    options = {"queue_max": 64, "queue_wait_s": 10.0, "timeout_s": 60.0, "slice_s": 0.005, **bounds}
    return Engine(repository, "cpu", **options)  # type: ignore[arg-type]


def pixels(rows: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random((rows, 784), dtype=np.float32)


def answer_bytes(result: object) -> bytes:
    """Every number of an answer, as bytes."""
    if isinstance(result, np.ndarray):
        return result.tobytes()
    summary = result.summary  # type: ignore[attr-defined]
    parts = [getattr(summary, name).tobytes() for name in summary.__dataclass_fields__]
    if result.sample_probabilities is not None:  # type: ignore[attr-defined]
        parts.append(result.sample_probabilities.tobytes())  # type: ignore[attr-defined]
    return b"".join(parts)


@pytest.fixture
def one_thread_torch() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the service's default (DROPSERVE_TORCH_THREADS)
    yield
    torch.set_num_threads(threads)


@pytest.mark.usefixtures("one_thread_torch")
@pytest.mark.parametrize("rows", [1, 2, 7, 64, 300])
def test_a_request_s_answer_is_the_same_bytes_alone_and_among_others(paper_model, tmp_path, rows):
    samples = 100 if rows <= 7 else 8

    async def scenario() -> None:
        engine = engine_for(tmp_path)
        await engine.start()
        target = pixels(rows, 0)

        def ask() -> list:
            return [
                engine.predict(paper_model, target),
                engine.uncertainty(paper_model, target, samples, 42, True),
            ]

        alone = [await call for call in ask()]
        # The same requests again while others of every size share the engine's rounds: a long MC
        # request keeps the engine busy, so that the rest queue and are computed round by round.
        busy = asyncio.ensure_future(engine.uncertainty(paper_model, pixels(300, 9), 60, 9, False))
        await asyncio.sleep(0)
        crowd = [engine.predict(paper_model, pixels(n, n)) for n in (1, 3, 17, 300)]
        crowd += [engine.uncertainty(paper_model, pixels(n, n), 8, n, False) for n in (1, 5, 40)]
        together = await asyncio.gather(*crowd[:4], *ask(), *crowd[4:])
        await busy
        for lone, shared in zip(alone, together[4:6], strict=True):
            assert answer_bytes(lone) == answer_bytes(shared)
        assert engine.scheduler.rounds > 1
        await engine.stop()

    asyncio.run(scenario())


def test_the_same_seed_gives_the_same_answer_and_another_seed_another(paper_model, tmp_path):
    async def scenario() -> tuple[bytes, bytes, bytes]:
        engine = engine_for(tmp_path)
        await engine.start()
        x = pixels(3, 1)
        a = await engine.uncertainty(paper_model, x, 20, 5, False)
        b = await engine.uncertainty(paper_model, x, 20, 5, False)
        c = await engine.uncertainty(paper_model, x, 20, 6, False)
        await engine.stop()
        return answer_bytes(a), answer_bytes(b), answer_bytes(c)

    a, b, c = asyncio.run(scenario())
    assert a == b and a != c


def counting_steps(count: int, ran: list[int]) -> Steps:
    for step in range(count):
        ran.append(step)
        yield
    return count


def test_a_long_job_shares_rounds_with_short_ones():
    async def scenario() -> list[str]:
        scheduler = Scheduler(queue_max=8, queue_wait_s=10.0, timeout_s=60.0, slice_s=0.001)
        scheduler.start()
        finished: list[str] = []

        async def job(name: str, steps: int) -> None:
            await scheduler.run(counting_steps(steps, []))
            finished.append(name)

        long = asyncio.create_task(job("long", 1000))
        await asyncio.sleep(0)
        await asyncio.sleep(0)  # the long job has started
        await job("short", 1)
        await long
        await scheduler.stop()
        return finished

    assert asyncio.run(scenario()) == ["short", "long"]


@pytest.mark.parametrize(
    ("engine_timeout_s", "request_timeout_s"),
    [(0.05, None), (0.05, 100.0), (60.0, 0.05)],
    ids=["engine-bound", "a-longer-request-bound-changes-nothing", "the-request-s-shorter-bound"],
)
def test_a_timed_out_job_stops_computing(engine_timeout_s, request_timeout_s):
    async def scenario() -> list[int]:
        scheduler = Scheduler(queue_max=8, queue_wait_s=10.0, timeout_s=engine_timeout_s, slice_s=0.001)
        scheduler.start()
        ran: list[int] = []

        def slow_steps() -> Steps:
            for step in range(10_000):
                ran.append(step)
                yield
                import time

                time.sleep(0.001)
            return None

        with pytest.raises(TimedOut, match=r"longer than 0\.05 s"):
            await scheduler.run(slow_steps(), timeout_s=request_timeout_s)
        steps_when_refused = len(ran)
        await asyncio.sleep(0.05)
        assert len(ran) == steps_when_refused  # nothing ran after the refusal
        await scheduler.stop()
        return ran

    ran = asyncio.run(scenario())
    assert 10 < len(ran) < 200


def test_a_cancelled_request_stops_its_computation():
    async def scenario() -> int:
        scheduler = Scheduler(queue_max=8, queue_wait_s=10.0, timeout_s=60.0, slice_s=0.001)
        scheduler.start()
        ran: list[int] = []
        task = asyncio.create_task(scheduler.run(counting_steps(1_000_000, ran)))
        while len(ran) < 10:
            await asyncio.sleep(0)
        task.cancel()
        await asyncio.sleep(0.01)
        count = len(ran)
        await asyncio.sleep(0.01)
        assert len(ran) == count
        assert scheduler.jobs == 0
        await scheduler.stop()
        return count

    assert asyncio.run(scenario()) < 1_000_000


def test_a_full_engine_refuses_with_overloaded_and_the_rest_are_answered():
    async def scenario() -> list[object]:
        scheduler = Scheduler(queue_max=3, queue_wait_s=10.0, timeout_s=60.0, slice_s=0.001)
        scheduler.start()
        calls = [scheduler.run(counting_steps(50, [])) for _ in range(5)]
        results = await asyncio.gather(*calls, return_exceptions=True)
        await scheduler.stop()
        return results

    results = asyncio.run(scenario())
    assert results[:3] == [50, 50, 50]
    assert all(isinstance(r, Overloaded) for r in results[3:])


def test_a_job_that_waited_past_the_bound_is_refused_and_others_go_on():
    async def scenario() -> list[object]:
        scheduler = Scheduler(queue_max=8, queue_wait_s=0.01, timeout_s=60.0, slice_s=0.001)
        first = asyncio.ensure_future(scheduler.run(counting_steps(1, [])))
        await asyncio.sleep(0.05)  # queued while the scheduler is not running yet
        scheduler.start()
        second = await scheduler.run(counting_steps(1, []))
        results = [await asyncio.gather(first, return_exceptions=True), second]
        await scheduler.stop()
        return results

    [first], second = asyncio.run(scenario())
    assert isinstance(first, Overloaded)
    assert "waited" in first.message
    assert second == 1


def test_stop_answers_what_is_in_and_refuses_what_comes_after(tmp_path):
    publish_tiny(tmp_path)

    async def scenario() -> None:
        engine = engine_for(tmp_path)
        await engine.start()
        loaded = engine.registry.get("mnist-mlp")
        pending = asyncio.ensure_future(engine.uncertainty(loaded, pixels(2, 0), 1000, 1, False))
        await asyncio.sleep(0)
        await engine.stop()
        assert pending.done() and pending.result().samples == 1000
        with pytest.raises(Overloaded):
            await engine.predict(loaded, pixels(1, 0))

    asyncio.run(scenario())
