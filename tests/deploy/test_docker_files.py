"""The Docker deployment's static promises: the Dockerfile's contract and the compose stack's wiring.

deploy/ci-docker-e2e.sh proves them by running; these catch a broken edit without a Docker engine.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]


def dockerfile() -> str:
    return (ROOT / "Dockerfile").read_text()


def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_dockerfile_bases_runtime_and_user() -> None:
    text = dockerfile()
    assert "ARG BASE_IMAGE=python:3.11-slim" in text
    # the build stage compiles models/_kernels.c: the full image of the same Python has gcc
    assert "ARG BUILD_IMAGE=python:3.11\n" in text and "FROM ${BUILD_IMAGE} AS build" in text
    assert "ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu" in text
    final_stage = text.split("\nFROM ")[-1]
    assert re.search(r"^USER (?!root)\S+", final_stage, re.MULTILINE), "the final stage must not run as root"
    assert "/healthz" in final_stage.split("HEALTHCHECK", 1)[1]
    assert re.search(r'^VOLUME .*"/models"', final_stage, re.MULTILINE)
    # The image installs the releases the tests ran on (tests/deploy/test_dependencies.py).
    assert "--constraint constraints.txt ." in text
    # The CA bundle travels as a secret only; no layer copies it.
    assert "ca-certificates.crt" not in re.sub(r"^#.*$", "", text, flags=re.MULTILINE)


def test_dockerignore_keeps_the_context_small() -> None:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    assert lines[lines.index("*")] == "*", "ignore everything, then admit what the image needs"
    for needed in (
        "!pyproject.toml",
        "!constraints.txt",
        "!models/",
        "!training/",
        "!service/",
        "!deploy/wheelhouse/",
    ):
        assert needed in lines


def test_compose_train_then_replicas_behind_nginx() -> None:
    services = compose()["services"]
    assert services["train"]["image"] == services["api"]["image"]
    assert "training" in " ".join(services["train"]["command"])
    assert services["api"]["depends_on"]["train"]["condition"] == "service_completed_successfully"
    assert services["api"]["deploy"]["replicas"] >= 2
    assert "/readyz" in " ".join(services["api"]["healthcheck"]["test"])
    assert services["nginx"]["depends_on"]["api"]["condition"] == "service_healthy"
    models_mounts = {
        s: [v for v in services[s]["volumes"] if v.startswith("models:")] for s in ("train", "api")
    }
    assert models_mounts == {"train": ["models:/models"], "api": ["models:/models:ro"]}
    assert "models" in compose()["volumes"]


def test_compose_file_reads_with_compose_v1_too() -> None:
    document = compose()
    # docker-compose 1.29 rejects a top-level `name:`; `version:` is obsolete in Compose v2.
    assert "name" not in document and "version" not in document
    assert "container_name" not in document["services"]["api"], "replicas need generated names"


def test_nginx_balances_the_api_service() -> None:
    config = (ROOT / "deploy" / "nginx" / "default.conf").read_text()
    assert re.search(r"upstream (\w+) \{\s*server api:8000", config)
    mount = next(v for v in compose()["services"]["nginx"]["volumes"] if "default.conf" in v)
    assert (ROOT / mount.split(":")[0]).resolve() == ROOT / "deploy" / "nginx" / "default.conf"


def test_nginx_bounds_headers_and_bodies_before_the_api() -> None:
    # uvicorn's httptools parser bounds neither header sizes nor counts (docs/robustness.md): nginx does.
    config = (ROOT / "deploy" / "nginx" / "default.conf").read_text()
    directives = dict(re.findall(r"^\s*(\w+)\s+([^;]+);", config, re.MULTILINE))
    assert directives["large_client_header_buffers"] == "4 8k"
    assert directives["client_header_timeout"] == "10s"
    assert directives["client_max_body_size"] == "11m"  # over the api's own 10 MiB, which answers 413 itself


def test_nginx_closes_an_idle_upstream_connection_before_the_api_does() -> None:
    # Else nginx may send a POST onto a connection the api is closing at that moment: a reset, a 502.
    from service.settings import Settings

    config = (ROOT / "deploy" / "nginx" / "default.conf").read_text()
    upstream = re.search(r"upstream \w+ \{([^}]*)\}", config)
    assert upstream is not None
    timeout = re.search(r"keepalive_timeout\s+(\d+)s;", upstream.group(1))
    assert timeout is not None, "the upstream block sets keepalive_timeout (nginx's default is 60 s)"
    api = compose()["services"]["api"].get("environment", {})
    assert "DROPSERVE_KEEP_ALIVE_S" not in api  # the api keeps its default
    assert int(timeout.group(1)) < Settings().keep_alive_s


def test_readme_deploy_lines_are_what_ci_runs() -> None:
    # deploy/ci-docker-e2e.sh runs these README lines verbatim on a fresh copy of the tree.
    lines = re.findall(
        r"^(?:make docker-(?:build|up|down)(?: |$)|curl .*127\.0\.0\.1:8080/).*$",
        (ROOT / "README.md").read_text(),
        re.MULTILINE,
    )
    steps = [line.split()[1] if line.startswith("make") else "curl" for line in lines]
    assert [s for i, s in enumerate(steps) if i == 0 or steps[i - 1] != s] == [
        "docker-build",
        "docker-up",
        "curl",
        "docker-down",
    ]
    assert any("/v1/predict" in line for line in lines) and any("/v1/uncertainty" in line for line in lines)


def test_docker_up_prepares_what_the_stack_needs() -> None:
    # Nothing prepared by hand: compose found or installed, the dataset cached on the host by the
    # project's loader and handed to uid 10001 before compose starts the train job.
    plan = subprocess.run(
        ["make", "-n", "docker-up"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    dataset = plan.index('load_dataset("mnist")')
    chown = plan.index("chown -R 10001:10001 .cache/docker-datasets")
    up = plan.index("deploy/compose.sh up -d")
    assert dataset < chown < up
    assert "DROPSERVE_DATASETS=" + str(ROOT / ".cache/docker-datasets") in plan
    assert "/readyz" in plan[up:], "docker-up returns once nginx answers /readyz"
    assert "apt-get install -y -qq docker-compose" in (ROOT / "deploy" / "compose.sh").read_text()
    api_env = compose()["services"]["api"]["environment"]
    assert float(api_env["DROPSERVE_POLL_INTERVAL_S"]) > 0, "new versions served without a restart"
