"""`python -m service`: serve with uvicorn on the configured host and port."""

from __future__ import annotations

import logging
import sys

import uvicorn
from pydantic import ValidationError

from service.logs import configure_logging
from service.settings import Settings


def main() -> int:
    try:
        settings = Settings()
    except ValidationError as e:
        # The errors without their input values: a rejected key must not reach the logs.
        problems = "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors())
        print(f"invalid DROPSERVE_* settings: {problems}", file=sys.stderr)
        return 2
    configure_logging(settings.log_format, settings.log_level)
    logging.getLogger(__name__).info(
        "serving models from %s with %d worker(s)", settings.model_repository, settings.workers
    )
    uvicorn.run(
        "service.http.app:app_from_environment",
        factory=True,  # each worker process builds its own app and engine
        workers=settings.workers,
        # asyncio's loop, not uvloop: libuv accepts one connection per loop iteration, so under a
        # flood new connections waited seconds to be accepted; asyncio's accepts all pending.
        loop="asyncio",
        host=settings.host,
        port=settings.port,
        log_config=None,
        log_level=settings.log_level,
        timeout_graceful_shutdown=int(settings.request_timeout_s) + 1,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
