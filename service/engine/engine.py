"""The routes' door to inference: the models held, and the scheduler that computes for them."""

from __future__ import annotations

from pathlib import Path
from typing import cast

import numpy as np

from models.artifact import LoadedModel
from service.engine import compute
from service.engine.compute import UncertaintyResult
from service.engine.registry import ModelRegistry
from service.engine.scheduler import Scheduler


class Engine:
    def __init__(
        self,
        repository: Path,
        device: str,
        queue_max: int,
        queue_wait_s: float,
        timeout_s: float,
        slice_s: float,
    ) -> None:
        self.registry = ModelRegistry(repository, device)
        self.scheduler = Scheduler(queue_max, queue_wait_s, timeout_s, slice_s)

    async def start(self) -> None:
        self.registry.load_all()
        self.scheduler.start()

    async def stop(self) -> None:
        await self.scheduler.stop()

    async def predict(self, loaded: LoadedModel, pixels: np.ndarray) -> np.ndarray:
        """(B, 784) pixels in [0, 1] -> (B, C) eval-mode probabilities."""
        return cast(np.ndarray, await self.scheduler.run(compute.predict(loaded, pixels)))

    async def uncertainty(
        self, loaded: LoadedModel, pixels: np.ndarray, samples: int, seed: int, return_samples: bool
    ) -> UncertaintyResult:
        """`samples` MC-dropout passes seeded with `seed`: the same seed, the same answer."""
        steps = compute.uncertainty(loaded, pixels, samples, seed, return_samples)
        return cast(UncertaintyResult, await self.scheduler.run(steps))
