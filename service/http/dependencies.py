"""Request dependencies as named `Annotated` aliases."""

from __future__ import annotations

import hmac
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from service.engine.engine import Engine
from service.engine.registry import ModelRegistry
from service.http.errors import ApiError
from service.http.limits import BodyBudget
from service.settings import Settings

# Dependencies are `async def` although they never await: FastAPI runs plain `def` dependencies in
# the threadpool, one thread hop each per request, which profiling showed as a fifth of the event
# loop's time under load.


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_registry(request: Request) -> ModelRegistry:
    return request.app.state.serving.engine.registry


async def get_engine(request: Request) -> Engine:
    return request.app.state.serving.engine


def _check_bearer(request: Request, expected: str, what: str) -> None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), expected.encode()):
        raise ApiError(
            401,
            f"{what} needs the header `Authorization: Bearer <key>`",
            headers={"WWW-Authenticate": "Bearer"},
        )


@dataclass(frozen=True)
class Serving:
    """What an inference route needs, from `serving_for`."""

    settings: Settings
    engine: Engine
    decode_pool: Executor  # threads that decode large bodies off the event loop
    budget: BodyBudget  # bytes of bodies held, for routes that reserve room for a large answer


def serving_for(request: Request) -> Serving:
    """The serving context, once the API key (when one is set) checks out. A plain call at the top
    of each inference route, not a FastAPI dependency, whose solving costs every request event-loop
    time (docs/performance.md), and inference requests are most of the load."""
    serving: Serving = request.app.state.serving
    if serving.settings.api_key is not None:
        _check_bearer(request, serving.settings.api_key.get_secret_value(), "inference")
    return serving


async def require_admin_key(request: Request, settings: Annotated[Settings, Depends(get_settings)]) -> None:
    if settings.admin_key is None:
        raise ApiError(404, "admin routes are disabled; set DROPSERVE_ADMIN_KEY to enable them")
    _check_bearer(request, settings.admin_key.get_secret_value(), "this admin route")


SettingsDep = Annotated[Settings, Depends(get_settings)]
RegistryDep = Annotated[ModelRegistry, Depends(get_registry)]
EngineDep = Annotated[Engine, Depends(get_engine)]
