"""A real server (python -m service) with a tiny model, an API key and an admin key."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import publish_tiny
from tests.server import Server, running_server

API_KEY = "client-test-key-0123456789"
ADMIN_KEY = "client-admin-key-0123456789"
DIGIT = Path(__file__).parents[2] / "docs" / "examples" / "digit-7.png"


@pytest.fixture(scope="session")
def tiny_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("client-artifacts")
    publish_tiny(root)
    return root


@pytest.fixture(scope="session")
def server(tiny_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("client-server") / "server.log"
    with running_server(
        tiny_repository, log, api_key=API_KEY, admin_key=ADMIN_KEY, mc_samples_max="1000"
    ) as s:
        yield s
