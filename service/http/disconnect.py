"""Stop the computation of a client that has left: nobody is there to read its answer.

uvicorn does not cancel a route whose client disconnects; the route would compute to the end, up
to `DROPSERVE_REQUEST_TIMEOUT_S`, for no one (a client that gives up after a few seconds and
retries would have the server compute each attempt in full). So a route that hands the engine a job
of several steps also listens for the client's disconnect, and cancels the job when it comes first:
the engine stops it before its next step. A job of one step cannot be stopped midway, so it is not
watched (a watch costs a task per request).
"""

from __future__ import annotations

import asyncio

import numpy as np
from starlette.requests import Request
from starlette.responses import Response

from models.artifact import LoadedModel
from models.spec import ConformalLevel
from service.engine.compute import UncertaintyResult, uncertainty_steps
from service.engine.engine import Engine

CLIENT_LEFT = 499  # nginx's "client closed request": what the access log and metrics record


async def uncertainty_unless_the_client_leaves(
    request: Request,
    engine: Engine,
    loaded: LoadedModel,
    pixels: np.ndarray,
    samples: int,
    seed: int,
    return_samples: bool,
    level: ConformalLevel | None,
    timeout_s: float | None = None,
) -> UncertaintyResult | None:
    """`engine.uncertainty(...)`, or None when its job takes several steps and the client
    disconnects first (the job is then cancelled). Call it once the body has been read: from then
    on, the next ASGI message is the disconnect."""
    work = engine.uncertainty(loaded, pixels, samples, seed, return_samples, level, timeout_s)
    if uncertainty_steps(loaded, len(pixels), samples) <= 1:
        return await work
    job = asyncio.ensure_future(work)
    left = asyncio.ensure_future(_disconnect(request))
    try:
        await asyncio.wait((job, left), return_when=asyncio.FIRST_COMPLETED)
    finally:
        left.cancel()
        abandoned = not job.done()
        if abandoned:
            job.cancel()
    return None if abandoned else job.result()


async def _disconnect(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


def client_left() -> Response:
    """The answer to a client that has gone: never sent, recorded as 499."""
    return Response(status_code=CLIENT_LEFT)
