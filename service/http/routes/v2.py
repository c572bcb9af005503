"""Open Inference Protocol (KServe V2), so Triton and KServe clients work unchanged.

Thin like the native routes: read the body -> `v2_codec` decodes -> engine -> `v2_codec` encodes.
Refusals answer as the protocol says, `{"error": "<message>"}`, with the statuses (and Retry-After)
the native API gives the same refusal; `V2Route` converts them, so no route needs its own try.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import APIRouter, Request
from fastapi.routing import APIRoute
from starlette.responses import JSONResponse, Response

from models.artifact import LoadedModel
from service.engine.errors import EngineError, NotReady
from service.http.decoding import LOOP_BODY_BYTES, conformal_level, reading_body
from service.http.dependencies import RegistryDep, Serving, serving_for
from service.http.disconnect import client_left, uncertainty_unless_the_client_leaves
from service.http.errors import ApiError, engine_refusal
from service.http.schemas import V2_ERROR_RESPONSES
from service.http.v2_codec import (
    CONFORMAL_OUTPUTS,
    INPUT,
    PER_CLASS_OUTPUTS,
    PREDICTION_OUTPUTS,
    UNCERTAINTY_OUTPUTS,
    InferRequest,
    decode_infer_request,
    encode_infer_response,
    output_datatype,
    prediction_outputs,
    uncertainty_outputs,
)

PLATFORM = "pytorch"
EXTENSIONS = ["binary_tensor_data", "parameters"]


def v2_error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """The protocol's error object."""
    return JSONResponse({"error": message}, status_code=status, headers=headers)


class V2Route(APIRoute):
    """A route whose refusals (its dependencies' too: the API key) answer in the protocol's shape."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def protocol_handler(request: Request) -> Response:
            try:
                return await handler(request)
            except ApiError as e:
                return v2_error(e.status, e.message, e.headers)
            except EngineError as e:
                refusal = engine_refusal(e)
                return v2_error(refusal.status, refusal.message, refusal.headers)

        return protocol_handler


router = APIRouter(
    prefix="/v2",
    tags=["open inference protocol (KServe V2)"],
    route_class=V2Route,
    responses=V2_ERROR_RESPONSES,
)

_INFER_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "example": {
                    "id": "42",
                    "parameters": {"mc_samples": 100, "seed": 1},
                    "inputs": [{"name": INPUT, "shape": [1, 784], "datatype": "FP32", "data": [0.0] * 784}],
                    "outputs": [{"name": "label"}, {"name": "mutual_information"}],
                }
            },
            "application/octet-stream": {
                "schema": {"type": "string", "format": "binary"},
                "description": "binary tensor data extension: a JSON header of "
                "Inference-Header-Content-Length bytes, then the bytes of each input with "
                "parameters.binary_data_size (little-endian, row major)",
            },
        },
    }
}


@router.get("", summary="Server metadata: name, version, protocol extensions")
async def server_metadata(request: Request) -> dict[str, Any]:
    return {"name": "dropserve", "version": request.app.version, "extensions": EXTENSIONS}


@router.get("/health/live", summary="Liveness: the server answers")
async def server_live() -> dict[str, bool]:
    return {"live": True}


@router.get("/health/ready", summary="Readiness: a model is loaded (503 until one is)")
async def server_ready(registry: RegistryDep) -> dict[str, bool]:
    if not registry.ready:
        raise NotReady("no model is loaded yet")
    return {"ready": True}


@router.get("/models/{name}", summary="Model metadata: versions, input and output tensors")
async def model_metadata(name: str, registry: RegistryDep) -> dict[str, Any]:
    loaded = registry.get(name)
    return metadata(loaded, sorted(registry.models.get(name) or [loaded.manifest.version]))  # one read


@router.get("/models/{name}/versions/{version}", summary="Metadata of a version")
async def version_metadata(name: str, version: str, registry: RegistryDep) -> dict[str, Any]:
    loaded = registry.get(name, parse_version(name, version))
    return metadata(loaded, [loaded.manifest.version])


@router.get("/models/{name}/ready", summary="Model readiness (404 when not served)")
async def model_ready(name: str, registry: RegistryDep) -> dict[str, Any]:
    return {"name": registry.get(name).manifest.name, "ready": True}


@router.get("/models/{name}/versions/{version}/ready", summary="Version readiness")
async def version_ready(name: str, version: str, registry: RegistryDep) -> dict[str, Any]:
    return {"name": registry.get(name, parse_version(name, version)).manifest.name, "ready": True}


@router.post(
    "/models/{name}/infer",
    summary="Inference with the default version; mc_samples adds uncertainty",
    openapi_extra=_INFER_BODY,
)
async def infer_model(name: str, request: Request) -> Response:
    serving = serving_for(request)
    return await infer(request, serving, serving.engine.registry.get(name))


@router.post(
    "/models/{name}/versions/{version}/infer",
    summary="Inference with a pinned version",
    openapi_extra=_INFER_BODY,
)
async def infer_version(name: str, version: str, request: Request) -> Response:
    serving = serving_for(request)
    return await infer(request, serving, serving.engine.registry.get(name, parse_version(name, version)))


@router.api_route("/{path:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"], include_in_schema=False)
async def no_such_route(path: str, request: Request) -> Response:
    raise ApiError(
        404,
        f"no route {request.method} /v2/{path[:100]}; the Open Inference Protocol routes are GET /v2, "
        "GET /v2/health/live, GET /v2/health/ready, GET /v2/models/{name}[/versions/{v}][/ready] and "
        "POST /v2/models/{name}[/versions/{v}]/infer",
    )


async def infer(request: Request, serving: Serving, loaded: LoadedModel) -> Response:
    decoded = await read_infer_request(request, serving, loaded)
    parameters: dict[str, Any] | None = None
    if decoded.mc_samples is None:
        values = prediction_outputs(await serving.engine.predict(loaded, decoded.pixels, decoded.timeout_s))
    else:
        seed = random.getrandbits(31) if decoded.seed is None else decoded.seed  # reported: reproducible
        level = None if decoded.coverage is None else conformal_level(loaded, decoded.coverage)
        result = await uncertainty_unless_the_client_leaves(
            request,
            serving.engine,
            loaded,
            decoded.pixels,
            decoded.mc_samples,
            seed,
            False,
            level,
            timeout_s=decoded.timeout_s,
        )
        if result is None:
            return client_left()
        values = uncertainty_outputs(result)
        parameters = {"mc_samples": result.samples, "seed": result.seed}
        if level is not None:
            parameters["coverage"] = level.coverage
    body, headers = encode_infer_response(
        loaded.manifest.name, loaded.manifest.version, decoded, values, parameters
    )
    return Response(body, headers=headers)


async def read_infer_request(request: Request, serving: Serving, loaded: LoadedModel) -> InferRequest:
    """Read the body (408 past `body_timeout_s`), then decode it: on the loop when small, else in
    the decode threads, as the native routes do."""
    settings = serving.settings
    async with reading_body(request, settings):
        body = await request.body()
    header_length = request.headers.get("inference-header-content-length")

    def decode() -> InferRequest:
        return decode_infer_request(body, header_length, loaded.manifest.spec, settings)

    if len(body) <= LOOP_BODY_BYTES:
        return decode()
    return await asyncio.get_running_loop().run_in_executor(serving.decode_pool, decode)


def parse_version(name: str, version: str) -> int:
    """A version from the path: an integer, else 404 naming what exists."""
    if version.isascii() and version.isdigit() and len(version) <= 9:
        return int(version)
    raise ApiError(404, f"model {name!r} has no version {version[:50]!r}; versions are integers")


def metadata(loaded: LoadedModel, versions: list[int]) -> dict[str, Any]:
    spec = loaded.manifest.spec
    return {
        "name": loaded.manifest.name,
        "versions": [str(v) for v in versions],
        "platform": PLATFORM,
        # FP32 in [0, 1]; UINT8 in [0, 255] is accepted too, and [-1, 28, 28] and [-1, 1, 28, 28]
        "inputs": [{"name": INPUT, "datatype": "FP32", "shape": [-1, spec.input_size]}],
        # the uncertainty outputs come only with the request parameter mc_samples, the prediction
        # set (of a model calibrated for it) only with coverage too
        "outputs": [
            {
                "name": name,
                "datatype": output_datatype(name),
                "shape": [-1, spec.num_classes] if name in PER_CLASS_OUTPUTS else [-1],
            }
            for name in PREDICTION_OUTPUTS
            + UNCERTAINTY_OUTPUTS
            + (CONFORMAL_OUTPUTS if loaded.manifest.conformal else ())
        ],
    }
