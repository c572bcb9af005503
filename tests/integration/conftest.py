"""A really trained model on real MNIST, and a real server process serving it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from tests.server import running_server
from training.job import JobConfig, run
from training.recipes import RECIPES


@pytest.fixture(scope="session")
def trained_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The seed recipe, shortened to 2 epochs, on the real MNIST training set, on one thread: with
    more, MKL may use fewer threads than asked when the machine is busy, and the rounding of its
    sums, and so the model the assertions measure, changes with whatever else is running."""
    root = tmp_path_factory.mktemp("artifacts")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run(JobConfig(recipe=RECIPES["seed"].with_overrides(epochs=2), artifacts=root, progress=False))
    finally:
        torch.set_num_threads(threads)
    return root


@pytest.fixture(scope="session")
def server_url(trained_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`python -m service` in its own process, on a free port."""
    log = tmp_path_factory.mktemp("server") / "server.log"
    with running_server(trained_repository, log) as server:
        yield server.url
