"""A really trained model on real MNIST, and a real server process serving it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from training.job import JobConfig, run
from training.recipes import RECIPES


@pytest.fixture(scope="session")
def trained_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The seed recipe, shortened to 2 epochs, on the real MNIST training set."""
    root = tmp_path_factory.mktemp("artifacts")
    run(JobConfig(recipe=RECIPES["seed"].with_overrides(epochs=2), artifacts=root, progress=False))
    return root


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def server_url(trained_repository: Path) -> Iterator[str]:
    """`python -m service` in its own process, on a free port."""
    port = free_port()
    env = {**os.environ, "DROPSERVE_MODEL_REPOSITORY": str(trained_repository), "DROPSERVE_PORT": str(port)}
    process = subprocess.Popen([sys.executable, "-m", "service"], env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None, "the server exited during start-up"
            time.sleep(0.2)
        else:
            pytest.fail("the server did not become ready within 60 s")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)
