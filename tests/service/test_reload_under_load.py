"""A reload under load, over real HTTP: threads hammer predict while a new version is published
and reloaded. No request fails, and the answers switch to the new version for good."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx

from tests.conftest import publish_tiny
from tests.server import running_server

ADMIN_KEY = "admin-key-0123456789abcdef"
THREADS = 4


def test_reload_under_load_fails_no_request(repository: Path, tmp_path: Path):
    with running_server(
        repository, tmp_path / "server.log", admin_key=ADMIN_KEY, access_log="false"
    ) as server:
        stop = threading.Event()
        seen: list[list[int]] = [[] for _ in range(THREADS)]  # each thread's answers' versions, in order
        failures: list[str] = []

        def hammer(versions: list[int]) -> None:
            with httpx.Client(base_url=server.url, timeout=30) as client:
                while not stop.is_set():
                    try:
                        response = client.post("/v1/predict", json={"instances": [[0.5] * 784]})
                    except httpx.HTTPError as error:
                        failures.append(repr(error))
                        continue
                    if response.status_code != 200:
                        failures.append(f"{response.status_code} {response.text[:200]}")
                        continue
                    versions.append(response.json()["model"]["version"])

        threads = [threading.Thread(target=hammer, args=(versions,)) for versions in seen]
        for thread in threads:
            thread.start()
        try:
            time.sleep(0.5)
            publish_tiny(repository, seed=1)
            reload = httpx.post(
                f"{server.url}/v1/models/mnist-mlp/reload",
                headers={"authorization": f"Bearer {ADMIN_KEY}"},
                timeout=30,
            )
            answered_before_reload = [len(versions) for versions in seen]
            time.sleep(0.5)
        finally:
            stop.set()
            for thread in threads:
                thread.join()

    assert reload.status_code == 200, reload.text
    assert reload.json()["default_version"] == 2
    assert failures == []
    for versions, before in zip(seen, answered_before_reload, strict=True):
        assert versions[:1] == [1] and versions[-1] == 2
        switched = versions.index(2)
        assert set(versions[switched:]) == {2}, "an answer went back to version 1 after the switch"
        assert switched <= before + 1  # at most the one request in flight at the reload answered v1
    assert sum(len(versions) for versions in seen) > 50  # it was load
