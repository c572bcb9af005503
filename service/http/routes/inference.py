"""Predict and MC-dropout uncertainty; thin: decode request -> engine call -> encode response."""

from __future__ import annotations

import random
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from models.artifact import LoadedModel
from service.http.decoding import conformal_level, read_inference_request
from service.http.dependencies import Serving, serving_for
from service.http.disconnect import client_left, uncertainty_unless_the_client_leaves
from service.http.errors import ApiError
from service.http.request_context import note_model
from service.http.responses import FastJSONResponse, prediction_body, uncertainty_body
from service.http.schemas import ERROR_RESPONSES, INFERENCE_BODY, PredictResponse, UncertaintyResponse

router = APIRouter(prefix="/v1", tags=["inference"], responses=ERROR_RESPONSES)

_PREDICT: dict[str, Any] = {
    "response_model": PredictResponse,
    "response_class": FastJSONResponse,
    "openapi_extra": INFERENCE_BODY,
    "description": "Deterministic prediction: eval mode, no dropout. Option `return_input`.",
}
_UNCERTAINTY: dict[str, Any] = {
    "response_model": UncertaintyResponse,
    "response_class": FastJSONResponse,
    "openapi_extra": INFERENCE_BODY,
    "description": "MC dropout: `samples` stochastic passes; options `samples`, `seed`, `return_samples`, "
    "`return_input`, `coverage` (a calibrated level such as 0.99: adds `prediction_set`, `coverage` and "
    "`abstain` to each prediction).",
}


async def predict(request: Request, name: str | None, version: int | None) -> Response:
    """Answer with `name`'s model (the default model when None), at `version` (its latest when None)."""
    serving = serving_for(request)
    loaded = serving.engine.registry.get(name or serving.settings.default_model, version)
    note_model(loaded.manifest.name)
    body = await read_inference_request(request, serving.settings, serving.decode_pool)
    probabilities = await serving.engine.predict(loaded, body.pixels)
    inputs = body.pixels if body.return_input else None
    return FastJSONResponse(prediction_body(loaded, probabilities, inputs))


async def uncertainty(request: Request, name: str | None, version: int | None) -> Response:
    """As `predict`, with MC-dropout passes and their statistics."""
    serving = serving_for(request)
    loaded = serving.engine.registry.get(name or serving.settings.default_model, version)
    note_model(loaded.manifest.name)
    body = await read_inference_request(request, serving.settings, serving.decode_pool)
    samples = body.samples or serving.settings.mc_samples_default
    room: AbstractContextManager[None] = nullcontext()
    if body.return_samples:
        sampled = sampled_values(loaded, len(body.pixels), samples, serving)
        room = serving.budget.holding(sampled * SAMPLED_VALUE_BYTES)  # 503 while others hold it
    level = None if body.coverage is None else conformal_level(loaded, body.coverage)
    seed = random.getrandbits(31) if body.seed is None else body.seed  # reported, so reproducible
    with room:
        result = await uncertainty_unless_the_client_leaves(
            request, serving.engine, loaded, body.pixels, samples, seed, body.return_samples, level
        )
        if result is None:
            return client_left()
        inputs = body.pixels if body.return_input else None
        return FastJSONResponse(uncertainty_body(loaded, result, inputs))


# What one sampled probability of an answer takes at its peak, while the answer is built: 8 bytes in
# the (B, T, C) array, about 22 of JSON, and room for orjson's growing buffer (a 2-million-value
# answer peaked at 83 MB). Reserved from the body budget before the passes run.
SAMPLED_VALUE_BYTES = 48


def sampled_values(loaded: LoadedModel, instances: int, samples: int, serving: Serving) -> int:
    """The sampled probabilities a `return_samples` answer would carry; 413, saying what fits, past
    the most one answer may carry (DROPSERVE_MAX_RESPONSE_VALUES, and what the body budget holds)."""
    limit = min(serving.settings.max_response_values, serving.budget.bound // SAMPLED_VALUE_BYTES)
    classes = loaded.manifest.spec.num_classes
    values = instances * samples * classes
    if values > limit:
        fits = max(1, limit // (instances * classes))
        raise ApiError(
            413,
            f"return_samples with {instances} instances x {samples} samples x {classes} classes is "
            f"{values} values, over the {limit} this server returns; ask for at most {fits} samples, "
            "fewer instances per request, or leave out return_samples (the statistics need no sampled "
            "probabilities)",
        )
    return values


@router.post("/predict", summary="Predict with the default model", **_PREDICT)
async def predict_default(request: Request) -> Response:
    return await predict(request, None, None)


@router.post("/uncertainty", summary="MC-dropout uncertainty with the default model", **_UNCERTAINTY)
async def uncertainty_default(request: Request) -> Response:
    return await uncertainty(request, None, None)


@router.post("/models/{name}/predict", summary="Predict with a model's default version", **_PREDICT)
async def predict_model(name: str, request: Request) -> Response:
    return await predict(request, name, None)


@router.post(
    "/models/{name}/uncertainty", summary="Uncertainty with a model's default version", **_UNCERTAINTY
)
async def uncertainty_model(name: str, request: Request) -> Response:
    return await uncertainty(request, name, None)


@router.post("/models/{name}/versions/{version}/predict", summary="Predict with a pinned version", **_PREDICT)
async def predict_version(name: str, version: int, request: Request) -> Response:
    return await predict(request, name, version)


@router.post(
    "/models/{name}/versions/{version}/uncertainty",
    summary="Uncertainty with a pinned version",
    **_UNCERTAINTY,
)
async def uncertainty_version(name: str, version: int, request: Request) -> Response:
    return await uncertainty(request, name, version)
