"""`python -m service`: serve with uvicorn on the configured host and port."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from pydantic import ValidationError

from service.logs import configure_logging
from service.settings import Settings
from service.workers import claim_port, exit_0, serve, serve_workers

log = logging.getLogger(__name__)


def main() -> int:
    try:
        settings = Settings()
    except ValidationError as e:
        # The errors without their input values: a rejected key must not reach the logs.
        problems = "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors())
        print(f"invalid DROPSERVE_* settings: {problems}", file=sys.stderr)
        return 2
    configure_logging(settings.log_format, settings.log_level)
    log.info("serving models from %s with %d worker(s)", settings.model_repository, settings.workers)
    signal.signal(signal.SIGTERM, exit_0)
    config = uvicorn_config(settings)
    if settings.workers == 1:
        sock = claim_port(settings.host, settings.port)
        if sock is None:
            return 1
        log.info("listening on http://%s:%d once the models are loaded", settings.host, settings.port)
        serve(config, sock)
        return 0
    with metrics_folder(settings.workers):
        return serve_workers(settings.workers, config, grace_s=config["timeout_graceful_shutdown"])


def uvicorn_config(settings: Settings) -> dict[str, Any]:
    """uvicorn.Config's keyword arguments, for one server process or each worker."""
    return {
        "app": "service.http.app:app_from_environment",
        "factory": True,  # each worker process builds its own app and engine
        # asyncio's loop, not uvloop: libuv accepts one connection per loop iteration, so under a
        # flood new connections waited seconds to be accepted; asyncio's accepts all pending.
        "loop": "asyncio",
        "host": settings.host,
        "port": settings.port,
        "log_config": None,
        "log_level": settings.log_level,
        "access_log": False,  # the app logs each request itself, with its id (service/http/request_context)
        "timeout_keep_alive": settings.keep_alive_s,
        "timeout_graceful_shutdown": int(settings.request_timeout_s) + 1,
    }


@contextmanager
def metrics_folder(workers: int) -> Iterator[None]:
    """A fresh folder where each of several workers writes its Prometheus values, so that
    /metrics, whichever worker answers, adds up all of theirs (prometheus_client's multiprocess
    mode, service/http/metrics.py). Fresh each start: old values must not count again."""
    folder = tempfile.mkdtemp(prefix="dropserve-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = folder  # read by the workers, which inherit it
    log.info("/metrics adds up the %d workers' values kept in %s", workers, folder)
    try:
        yield
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
