"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter

from service.http.dependencies import RegistryDep
from service.http.errors import ApiError

router = APIRouter(tags=["operations"])


@router.get("/healthz", summary="Liveness: the process answers")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="Readiness: at least one model is loaded")
async def readyz(registry: RegistryDep) -> dict[str, object]:
    if not registry.ready:
        raise ApiError(503, "no model is loaded yet", headers={"Retry-After": "5"})
    return {"status": "ready", "models": {name: sorted(v) for name, v in registry.models.items()}}
