"""`python -m service`: serve with uvicorn on the configured host and port."""

from __future__ import annotations

import logging
import sys

import uvicorn
from pydantic import ValidationError

from service.app import create_app
from service.logs import configure_logging
from service.settings import Settings


def main() -> int:
    try:
        settings = Settings()
    except ValidationError as e:
        print(f"invalid DROPSERVE_* settings:\n{e}", file=sys.stderr)
        return 2
    configure_logging(settings.log_format, settings.log_level)
    logging.getLogger(__name__).info("serving models from %s", settings.model_repository)
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_config=None,
        log_level=settings.log_level,
        timeout_graceful_shutdown=int(settings.request_timeout_s) + 1,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
