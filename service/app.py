"""The app factory: `create_app(settings)`; models load in the lifespan, nothing at import time."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import torch
from fastapi import FastAPI

from service.dependencies import Serving
from service.errors import install_error_handlers
from service.limits import BodySizeLimit
from service.registry import ModelRegistry
from service.routes import health, inference, models
from service.runner import InferenceRunner
from service.runtime import hand_back_the_gil_sooner, keep_freed_memory, settle_heap
from service.settings import Settings
from service.shedding import Admission, ShedWhenFull

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        torch.set_num_threads(settings.torch_threads)
        keep_freed_memory()
        hand_back_the_gil_sooner()
        await app.state.runner.start()
        app.state.registry.load_all()
        await app.state.runner.serve_models(app.state.registry.loaded())
        settle_heap()
        if not app.state.registry.ready:
            log.warning(
                "no model found under %s; /readyz answers 503 until one is loaded",
                settings.model_repository,
            )
        yield
        await app.state.runner.stop()

    app = FastAPI(
        title="dropserve",
        summary="Predictions with calibrated Monte-Carlo-dropout uncertainty.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.registry = ModelRegistry(settings.model_repository, settings.device)
    app.state.admission = Admission(settings.queue_max)
    app.state.runner = InferenceRunner(settings, app.state.admission)
    app.state.serving = Serving(settings, app.state.registry, app.state.runner)
    install_error_handlers(app)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    # outermost: the cheapest 503 an ASGI server allows (`python -m service` refuses in the parser)
    app.add_middleware(ShedWhenFull, admission=app.state.admission)
    # Not include_router: FastAPI 0.165 walks an included router's route list on every request to
    # validate its route cache, a tenth of the event loop's time under load in profiles. These
    # routers put their prefix, tags, responses and dependencies on each route, so the routes join
    # the app's table as they are; inference first, as the router tries routes in order and they
    # carry nearly all the traffic (the docs routes FastAPI added come after them).
    app.router.routes[:0] = inference.router.routes
    for module in (health, models):
        app.router.routes.extend(module.router.routes)
    return app
