"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter

from service.engine.errors import NotReady
from service.http.dependencies import RegistryDep, SettingsDep
from service.settings import Settings

router = APIRouter(tags=["operations"])


# HEAD too, for monitors and load balancers that probe with it (uvicorn sends the headers alone);
# left out of the OpenAPI document.
@router.get("/healthz", summary="Liveness: the process answers")
@router.head("/healthz", include_in_schema=False)
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="Readiness: at least one model is loaded")
@router.head("/readyz", include_in_schema=False)
async def readyz(registry: RegistryDep, settings: SettingsDep) -> dict[str, object]:
    if not registry.ready:
        raise NotReady(how_to_load_a_model(settings))  # 503 with Retry-After, as service/http/errors maps it
    return {"status": "ready", "models": {name: sorted(v) for name, v in registry.models.items()}}


def how_to_load_a_model(settings: Settings) -> str:
    """What a server without a model says, in /readyz and its startup log: how to get one loaded."""
    repository = settings.model_repository
    if settings.poll_interval_s:
        loaded = f"this server loads it at its next rescan (every {settings.poll_interval_s:g} s)"
    elif settings.admin_key is not None:
        loaded = "then POST /v1/admin/reload with the admin key, or restart"
    else:
        loaded = (
            "then restart this server, or run it with DROPSERVE_POLL_INTERVAL_S to load new models by itself "
            "(or DROPSERVE_ADMIN_KEY, for POST /v1/admin/reload)"
        )
    return (
        f"no model is loaded: {repository} holds no loadable <name>/<version>/ folder. Train one into it "
        f"(python -m training --artifacts {repository}, or make train); {loaded}"
    )
