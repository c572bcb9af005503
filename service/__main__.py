"""`python -m service`: serve with uvicorn on the configured host and port."""

from __future__ import annotations

import logging
import sys

import uvicorn
from pydantic import ValidationError

from service.app import create_app
from service.logs import configure_logging
from service.settings import Settings
from service.shedding import RefusingHttpToolsProtocol


def main() -> int:
    try:
        settings = Settings()
    except ValidationError as e:
        print(f"invalid DROPSERVE_* settings:\n{e}", file=sys.stderr)
        return 2
    configure_logging(settings.log_format, settings.log_level)
    logging.getLogger(__name__).info("serving models from %s", settings.model_repository)
    app = create_app(settings)
    uvicorn.run(
        app,
        http=RefusingHttpToolsProtocol.admitting(app.state.admission),
        # asyncio's loop, not uvloop: libuv accepts one connection per loop iteration, so under
        # load new connections waited seconds to be accepted (512 of them took up to 9 s at 40 ms
        # an iteration); asyncio's accepts all that are pending. Throughput measured the same.
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
