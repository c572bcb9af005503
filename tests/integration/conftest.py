"""A really trained model on real MNIST, and a real server process serving it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.server import running_server
from training.job import JobConfig, run
from training.recipes import RECIPES


@pytest.fixture(scope="session")
def trained_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The seed recipe, shortened to 2 epochs, on the real MNIST training set."""
    root = tmp_path_factory.mktemp("artifacts")
    run(JobConfig(recipe=RECIPES["seed"].with_overrides(epochs=2), artifacts=root, progress=False))
    return root


@pytest.fixture(scope="session")
def server_url(trained_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`python -m service` in its own process, on a free port."""
    log = tmp_path_factory.mktemp("server") / "server.log"
    with running_server(trained_repository, log) as server:
        yield server.url
