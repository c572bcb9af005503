"""The app factory: `create_app(settings)`; models load in the lifespan, nothing at import time."""

from __future__ import annotations

import gc
import logging
import os
import threading
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, suppress

import torch
from fastapi import FastAPI

from service.draining import Drain
from service.engine.engine import Engine
from service.http.dependencies import Serving
from service.http.errors import CatchAll, install_error_handlers
from service.http.limits import BodyBudget, BodyLimits
from service.http.metrics import Metrics
from service.http.request_context import AccessLog, RequestContext, RequestObserver
from service.http.routes import card, health, inference, models, page, prometheus, v2
from service.logs import configure_logging
from service.settings import Settings

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    metrics = Metrics()
    drain = Drain()  # what the app does between SIGTERM and uvicorn's shutdown
    budget = BodyBudget(settings.max_buffered_bytes)  # request and response bodies held at once
    engine = Engine(
        settings.model_repository,
        settings.device,
        queue_max=settings.queue_max,
        queue_wait_s=settings.queue_max_wait_ms / 1000,
        timeout_s=settings.request_timeout_s,
        slice_s=settings.compute_slice_ms / 1000,
        observer=RequestObserver(metrics),
        poll_interval_s=settings.poll_interval_s,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        torch.set_num_threads(settings.torch_threads)
        with ThreadPoolExecutor(
            settings.decode_threads, thread_name_prefix="decode", initializer=lower_priority
        ) as pool:
            app.state.serving = Serving(settings, engine, pool, budget)
            await engine.start()
            # What is alive now (modules, the app, the models) lives as long as the process: out of
            # the collector's sight, full collections no longer walk it several times a second under
            # load (a tenth of the CPU, and stalls of the requests in flight): docs/performance.md.
            gc.freeze()
            drain.install()
            if not engine.registry.ready:
                log.warning("%s; /readyz answers 503 until then", health.how_to_load_a_model(settings))
            yield
            await engine.stop()
            metrics.close()

    app = FastAPI(
        title="dropserve",
        summary="Predictions with calibrated Monte-Carlo-dropout uncertainty.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.drain = drain
    install_error_handlers(app)
    app.add_middleware(
        BodyLimits, max_bytes=settings.max_body_bytes, budget=budget, send_timeout_s=settings.body_timeout_s
    )
    app.add_middleware(CatchAll)  # outside the body limits, inside RequestContext
    # Added last, so outermost: its id and record cover the body-size refusals too.
    app.add_middleware(
        RequestContext,
        metrics=metrics,
        access_log=AccessLog(settings.log_format) if logs_access(settings) else None,
        drain=drain,
    )
    # Not include_router: FastAPI 0.165 walks an included router's route list on every request to
    # validate its route cache. These routers put their prefix, tags, responses and dependencies on
    # each route, so the routes join the app's table as they are; inference first, as the router
    # tries routes in order and they carry nearly all the traffic.
    app.router.routes[:0] = inference.router.routes
    for module in (health, models, card, page, v2, prometheus):
        app.router.routes.extend(module.router.routes)
    return app


def lower_priority() -> None:
    """Run this (decode) thread at a lower CPU priority than the event loop's, so that on a busy
    machine a long decode waits for the loop and not the other way round. Linux only (per-thread
    niceness); elsewhere a no-op."""
    with suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)


def logs_access(settings: Settings) -> bool:
    """Access lines are info records: written when on and the level admits info."""
    return settings.access_log and settings.log_level in ("debug", "info")


def app_from_environment() -> FastAPI:
    """The app for `uvicorn --factory` and its worker processes: settings from DROPSERVE_*."""
    settings = Settings()
    configure_logging(settings.log_format, settings.log_level)
    return create_app(settings)
