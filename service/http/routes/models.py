"""Model listing, metadata, and reloads (admin key)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends

from models.artifact import LoadedModel
from service.engine.errors import UnknownModel
from service.engine.registry import ModelRegistry, VersionResult
from service.http.dependencies import EngineDep, RegistryDep, SettingsDep, require_admin_key
from service.http.images import ACCEPTED_MEDIA_TYPES
from service.http.schemas import ERROR_RESPONSES, ModelList, ModelMetadata
from service.settings import Settings

router = APIRouter(prefix="/v1", tags=["models"], responses=ERROR_RESPONSES)


@router.get("/models", response_model=ModelList, summary="Models, versions, default version, readiness")
async def list_models(registry: RegistryDep, settings: SettingsDep) -> dict[str, Any]:
    return {
        "default_model": settings.default_model,
        "models": [
            {
                "name": name,
                "versions": sorted(versions),
                "default_version": max(versions),
                "ready": True,
            }
            for name, versions in sorted(registry.models.items())
        ],
    }


@router.get("/models/{name}", response_model=ModelMetadata, summary="Metadata of the default version")
async def model_metadata(name: str, registry: RegistryDep, settings: SettingsDep) -> dict[str, Any]:
    return metadata(registry.get(name), registry, settings)


@router.get(
    "/models/{name}/versions/{version}",
    response_model=ModelMetadata,
    summary="Metadata of a version",
)
async def version_metadata(
    name: str, version: int, registry: RegistryDep, settings: SettingsDep
) -> dict[str, Any]:
    return metadata(registry.get(name, version), registry, settings)


@router.post(
    "/models/{name}/reload",
    dependencies=[Depends(require_admin_key)],
    summary="Rescan a model's folder: serve new versions, drop removed ones",
    description="Versions already loaded are kept; a version that fails to load is reported and the "
    "others go on serving. Requests in flight finish on the version they started with. With several "
    "workers this reaches the one worker that answers; DROPSERVE_POLL_INTERVAL_S reaches them all.",
)
async def reload_model(name: str, engine: EngineDep) -> dict[str, Any]:
    results = (await engine.reload(name))[name]
    if not results:
        raise UnknownModel(f"no published version of {name[:100]!r} under the model repository")
    return reload_answer(engine.registry, name, results)


@router.post(
    "/admin/reload",
    dependencies=[Depends(require_admin_key)],
    summary="Rescan the whole model repository",
)
async def reload_models(engine: EngineDep) -> dict[str, Any]:
    results = await engine.reload()
    registry = engine.registry
    return {
        "models": {name: sorted(v) for name, v in registry.models.items()},
        "failures": registry.failures,
        "results": [reload_answer(registry, name, outcome) for name, outcome in results.items()],
    }


def reload_answer(registry: ModelRegistry, name: str, results: list[VersionResult]) -> dict[str, Any]:
    """One model's reload: what happened to each version, and what it serves now."""
    held = registry.models.get(name, {})
    return {
        "name": name,
        "versions": [
            {"version": r.version, "status": r.status} | ({"error": r.error} if r.error else {})
            for r in results
        ],
        "serving": sorted(held),
        "default_version": max(held) if held else None,
    }


def metadata(loaded: LoadedModel, registry: ModelRegistry, settings: Settings) -> dict[str, Any]:
    manifest = loaded.manifest
    spec = manifest.spec
    return {
        "name": manifest.name,
        "version": manifest.version,
        "versions": sorted(registry.models[manifest.name]),
        "input": {
            "shape": list(spec.input_shape),
            "value_range": [0.0, 1.0],
            "json": 'instances: 28x28 or flat 784 arrays in [0, 1], or {"b64": image}',
            "media_types": ["application/json", "multipart/form-data", *ACCEPTED_MEDIA_TYPES],
            "max_instances": settings.max_instances,
            "normalization": manifest.normalization.to_dict(),
        },
        "classes": manifest.class_names,
        "architecture": manifest.to_dict()["architecture"],
        "metrics": manifest.metrics,
        "uncertainty": {
            "method": "mc-dropout",
            "samples_default": settings.mc_samples_default,
            "samples_max": settings.mc_samples_max,
            "ood_threshold": manifest.calibration.ood_threshold,
            "ood_score": "mutual_information",
            "ood_calibration": manifest.calibration.to_dict(),
            "temperature": manifest.calibration.temperature,
            "coverage_levels": [
                lv.coverage for lv in (manifest.conformal.levels if manifest.conformal else ())
            ],
            "conformal": None if manifest.conformal is None else manifest.conformal.to_dict(),
            "abstention": None if manifest.abstention is None else manifest.abstention.to_dict(),
        },
        "provenance": manifest.provenance,
    }
