"""Predict and MC-dropout uncertainty; thin: decode request -> core call -> encode response."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from service import inference
from service.decoding import read_inference_request
from service.dependencies import Serving, ServingDep
from service.responses import FastJSONResponse, prediction_body, uncertainty_body
from service.schemas import ERROR_RESPONSES, INFERENCE_BODY, PredictResponse, UncertaintyResponse
from service.shedding import arrival

router = APIRouter(
    prefix="/v1",
    tags=["inference"],
    responses=ERROR_RESPONSES,
)

_PREDICT: dict[str, Any] = {
    "response_model": PredictResponse,
    "response_class": FastJSONResponse,
    "openapi_extra": INFERENCE_BODY,
    "description": "Deterministic prediction: eval mode, no dropout.",
}
_UNCERTAINTY: dict[str, Any] = {
    "response_model": UncertaintyResponse,
    "response_class": FastJSONResponse,
    "openapi_extra": INFERENCE_BODY,
    "description": "MC dropout: `samples` stochastic passes; options `samples`, `seed`, `return_samples`.",
}


async def predict(request: Request, serving: Serving, name: str, version: int | None) -> Response:
    loaded = serving.registry.get(name, version)
    body = await read_inference_request(request, serving.settings)
    probabilities = await serving.runner.predict(loaded, body.pixels, arrival(request.scope))
    return FastJSONResponse(prediction_body(loaded, probabilities))


async def uncertainty(request: Request, serving: Serving, name: str, version: int | None) -> Response:
    loaded = serving.registry.get(name, version)
    body = await read_inference_request(request, serving.settings)
    samples = body.samples or serving.settings.mc_samples_default
    seed = inference.fresh_seed() if body.seed is None else body.seed
    result = await serving.runner.uncertainty(
        loaded, body.pixels, samples, seed, body.return_samples, arrival(request.scope)
    )
    return FastJSONResponse(uncertainty_body(loaded, result))


@router.post("/predict", summary="Predict with the default model", **_PREDICT)
async def predict_default(request: Request, serving: ServingDep) -> Response:
    return await predict(request, serving, serving.settings.default_model, None)


@router.post("/uncertainty", summary="MC-dropout uncertainty with the default model", **_UNCERTAINTY)
async def uncertainty_default(request: Request, serving: ServingDep) -> Response:
    return await uncertainty(request, serving, serving.settings.default_model, None)


@router.post("/models/{name}/predict", summary="Predict with a model's default version", **_PREDICT)
async def predict_model(name: str, request: Request, serving: ServingDep) -> Response:
    return await predict(request, serving, name, None)


@router.post(
    "/models/{name}/uncertainty",
    summary="Uncertainty with a model's default version",
    **_UNCERTAINTY,
)
async def uncertainty_model(name: str, request: Request, serving: ServingDep) -> Response:
    return await uncertainty(request, serving, name, None)


@router.post("/models/{name}/versions/{version}/predict", summary="Predict with a pinned version", **_PREDICT)
async def predict_version(
    name: str,
    version: int,
    request: Request,
    serving: ServingDep,
) -> Response:
    return await predict(request, serving, name, version)


@router.post(
    "/models/{name}/versions/{version}/uncertainty",
    summary="Uncertainty with a pinned version",
    **_UNCERTAINTY,
)
async def uncertainty_version(
    name: str,
    version: int,
    request: Request,
    serving: ServingDep,
) -> Response:
    return await uncertainty(request, serving, name, version)
