"""Open Inference Protocol (KServe V2) infer bodies <-> pixels and the engine's answers.

A request body is JSON; with the binary tensor data extension its first `Inference-Header-Content-Length`
bytes are the JSON and the rest is the bytes of each input that declares `binary_data_size`, in input
order (little-endian, row major, no padding). `decode_infer_request` validates all of it and returns
pixels (B, 784) float32 in [0, 1] exactly as the native routes compute them (UINT8 values are divided
by 255 as decoded images are). `encode_infer_response` writes the outputs asked for, each as JSON data
or as binary.

Tensors: input `input`, FP32 in [0, 1] or UINT8 in [0, 255], shape [B, 784], [B, 28, 28] or
[B, 1, 28, 28]. Outputs `probabilities` FP32 [B, C] and `label` INT64 [B]; with the request parameter
`mc_samples`, `probabilities` is the mean over the passes (scaled by the artifact's temperature, as
the native answer's), and `std` FP32 [B, C] and the per-input statistics `predictive_entropy`,
`expected_entropy`, `mutual_information`, `variation_ratio` FP32 [B] join them; with the parameter
`coverage` too (a calibrated level, e.g. 0.99), `prediction_set` BOOL [B, C], each class's membership
of the input's conformal set. The parameter `timeout` (microseconds, as tritonclient's `infer(timeout=)`
sends it; 0 for none) bounds the request's time in the engine below the server's own request
timeout. Every refusal is an ApiError: 400, or 413 past the instance bound.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from models.spec import MLPSpec
from service.engine.compute import UncertaintyResult
from service.http.decoding import MAX_SEED, check_range, json_numbers, parse_json
from service.http.errors import ApiError, quote
from service.settings import Settings

INPUT = "input"
INPUT_DATATYPES: dict[str, np.dtype] = {"FP32": np.dtype("<f4"), "UINT8": np.dtype("u1")}
PREDICTION_OUTPUTS = ("probabilities", "label")
UNCERTAINTY_OUTPUTS = (
    "std",
    "predictive_entropy",
    "expected_entropy",
    "mutual_information",
    "variation_ratio",
)
CONFORMAL_OUTPUTS = ("prediction_set",)  # with the request parameter coverage
PER_CLASS_OUTPUTS = ("probabilities", "std", "prediction_set")  # [B, C]; the others are [B]
REQUEST_PARAMETERS = ("mc_samples", "seed", "binary_data_output", "coverage", "timeout")
_NUMPY: dict[str, np.dtype] = {"FP32": np.dtype("<f4"), "INT64": np.dtype("<i8"), "BOOL": np.dtype("?")}
_ACCEPTED = "FP32 pixels in [0, 1] or UINT8 pixels in [0, 255]"


def output_datatype(name: str) -> str:
    return "INT64" if name == "label" else "BOOL" if name in CONFORMAL_OUTPUTS else "FP32"


@dataclass(frozen=True)
class RequestedOutput:
    name: str
    binary: bool  # returned as binary tensor data, else as JSON `data`


@dataclass(frozen=True)
class InferRequest:
    pixels: np.ndarray  # (B, 784) float32 in [0, 1]
    outputs: tuple[RequestedOutput, ...]  # in the order the answer lists them
    request_id: str | None = None
    mc_samples: int | None = None
    seed: int | None = None
    coverage: float | None = None  # a conformal level, checked against the model's by the route
    timeout_s: float | None = None  # the client's bound on its time in the engine, if any


def decode_infer_request(
    body: bytes, header_length: str | None, spec: MLPSpec, settings: Settings
) -> InferRequest:
    """An infer body (with its Inference-Header-Content-Length, if any) -> a validated request."""
    header, binary = _split(body, header_length)
    advice = (
        "send an inference request object, with Inference-Header-Content-Length giving its length "
        "when binary tensor data follow it"
    )
    request = _object(parse_json(header, advice), "the request")
    _known_keys(request, ("id", "parameters", "inputs", "outputs"), "the request")
    request_id = request.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise ApiError(400, f'"id" must be a string, got {quote(request_id)}')
    parameters = _parameters(request.get("parameters", {}), settings)
    mc_samples, seed, binary_default, coverage, timeout_s = parameters
    booleans = b"true" in header or b"false" in header
    pixels = _input_pixels(request.get("inputs"), binary, booleans, spec, settings)
    outputs = _requested_outputs(
        request.get("outputs"), mc_samples is not None, binary_default, settings, coverage is not None
    )
    return InferRequest(pixels, outputs, request_id, mc_samples, seed, coverage, timeout_s)


def prediction_outputs(probabilities: np.ndarray) -> dict[str, np.ndarray]:
    """(B, C) eval-mode probabilities -> the `probabilities` and `label` tensors."""
    return {"probabilities": probabilities, "label": probabilities.argmax(-1)}


def uncertainty_outputs(result: UncertaintyResult) -> dict[str, np.ndarray]:
    """An MC-dropout answer -> every output tensor; `probabilities` is the answer's (p̄ scaled by
    the artifact's temperature), `prediction_set` is there when a level was asked for."""
    values = {
        "probabilities": result.probabilities,
        "label": result.probabilities.argmax(-1),
        **{name: getattr(result.summary, name) for name in UNCERTAINTY_OUTPUTS},
    }
    if result.prediction_sets is not None:
        values["prediction_set"] = result.prediction_sets
    return values


def encode_infer_response(
    model_name: str,
    model_version: int,
    request: InferRequest,
    values: dict[str, np.ndarray],
    parameters: dict[str, Any] | None = None,
) -> tuple[bytes, dict[str, str]]:
    """The response body and its headers: plain JSON, or the JSON header followed by the binary
    outputs with `Inference-Header-Content-Length` when any output is binary."""
    outputs: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for requested in request.outputs:
        datatype = output_datatype(requested.name)
        array = np.ascontiguousarray(values[requested.name], dtype=_NUMPY[datatype])
        tensor: dict[str, Any] = {"name": requested.name, "datatype": datatype, "shape": list(array.shape)}
        if requested.binary:
            blobs.append(array.tobytes())
            tensor["parameters"] = {"binary_data_size": len(blobs[-1])}
        else:
            tensor["data"] = array.reshape(-1)
        outputs.append(tensor)
    response: dict[str, Any] = {"model_name": model_name, "model_version": str(model_version)}
    if request.request_id is not None:
        response["id"] = request.request_id
    if parameters:
        response["parameters"] = parameters
    response["outputs"] = outputs
    header = orjson.dumps(response, option=orjson.OPT_SERIALIZE_NUMPY)
    if not blobs:
        return header, {"content-type": "application/json"}
    return header + b"".join(blobs), {
        "content-type": "application/octet-stream",
        "inference-header-content-length": str(len(header)),
    }


def _split(body: bytes, header_length: str | None) -> tuple[bytes, bytes | None]:
    """(JSON header, binary tensor data or None when the extension is not in use)."""
    if header_length is None:
        return body, None
    text = header_length.strip()
    if not (text.isascii() and text.isdigit() and len(text) <= 19 and int(text) <= len(body)):
        raise ApiError(
            400,
            "Inference-Header-Content-Length must be the byte length of the JSON header that starts "
            f"the body, at most the body's {len(body)} bytes; got {quote(header_length)}",
        )
    return body[: int(text)], body[int(text) :]


def _parameters(
    parameters: Any, settings: Settings
) -> tuple[int | None, int | None, bool, float | None, float | None]:
    """(mc_samples, seed, binary_data_output, coverage, timeout in seconds) from the request's
    parameters."""
    parameters = _object(parameters, 'the request "parameters"')
    for key in parameters:
        if key not in REQUEST_PARAMETERS:
            raise ApiError(
                400,
                f"request parameter {quote(key)} is not supported; this server takes "
                f"{', '.join(REQUEST_PARAMETERS)} (its own scheduling applies to every request)",
            )
    mc_samples = _integer(parameters, "mc_samples", 1, settings.mc_samples_max)
    seed = _integer(parameters, "seed", 0, MAX_SEED)
    if seed is not None and mc_samples is None:
        raise ApiError(400, "the parameter seed seeds MC-dropout passes; send it with mc_samples")
    coverage = parameters.get("coverage")
    if coverage is not None:
        if not isinstance(coverage, int | float) or isinstance(coverage, bool) or not 0 < coverage < 1:
            raise ApiError(
                400,
                f"parameter coverage must be a number between 0 and 1 such as 0.99, got {quote(coverage)}",
            )
        if mc_samples is None:
            raise ApiError(
                400, "the parameter coverage asks for MC-dropout prediction sets; send it with mc_samples"
            )
    timeout_us = _integer(parameters, "timeout", 0, 2**63 - 1)  # 0: none of its own (Triton's)
    timeout_s = timeout_us / 1e6 if timeout_us else None
    return mc_samples, seed, _boolean(parameters, "binary_data_output"), coverage, timeout_s


def _integer(parameters: dict[str, Any], name: str, low: int, high: int) -> int | None:
    value = parameters.get(name)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ApiError(400, f"parameter {name} must be an integer from {low} to {high}, got {quote(value)}")
    return value


def _boolean(parameters: dict[str, Any], name: str) -> bool:
    value = parameters.get(name, False)
    if not isinstance(value, bool):
        raise ApiError(400, f"parameter {name} must be true or false, got {quote(value)}")
    return value


def _input_pixels(
    inputs: Any, binary: bytes | None, booleans: bool, spec: MLPSpec, settings: Settings
) -> np.ndarray:
    """The one input tensor -> (B, 784) float32 in [0, 1]."""
    if not isinstance(inputs, list) or not inputs:
        raise ApiError(400, f'"inputs" must be a non-empty list of tensors; this model takes one, "{INPUT}"')
    tensors = [_object(tensor, "each input") for tensor in inputs]
    for tensor in tensors:
        if tensor.get("name") != INPUT:
            raise ApiError(400, f"unknown input {quote(tensor.get('name'))}; this model takes one, {INPUT!r}")
    if len(tensors) > 1:
        raise ApiError(400, f"input {INPUT!r} appears {len(tensors)} times; send it once")
    tensor = tensors[0]
    _known_keys(tensor, ("name", "shape", "datatype", "parameters", "data"), f"input {INPUT!r}")

    datatype = tensor.get("datatype")
    if datatype not in INPUT_DATATYPES:
        raise ApiError(400, f"input {INPUT!r}: datatype {quote(datatype)} is not accepted; send {_ACCEPTED}")
    shape = tensor.get("shape")
    batch = _batch_size(shape, spec, settings)
    count = batch * spec.input_size
    dtype = INPUT_DATATYPES[datatype]

    parameters = _object(tensor.get("parameters", {}), f"input {INPUT!r} parameters")
    _known_keys(parameters, ("binary_data_size",), f"input {INPUT!r} parameters")
    if "binary_data_size" in parameters:
        values = _binary_values(tensor, parameters["binary_data_size"], binary, count, dtype, datatype, shape)
    else:
        if binary:
            raise ApiError(
                400,
                f"the body carries {len(binary)} bytes after the JSON header, but no input declares "
                'them; give the input "parameters": {"binary_data_size": <bytes>}',
            )
        values = _json_values(tensor.get("data"), datatype, booleans)
        if values.size != count:
            raise ApiError(
                400, f"input {INPUT!r}: shape {shape} holds {count} values, but data has {values.size}"
            )
    pixels = values.reshape(batch, spec.input_size)
    if datatype == "UINT8":
        return pixels.astype(np.float32) / 255.0  # as images.py scales decoded images
    advice = "FP32 values must be in [0, 1]; send 0-255 values as UINT8 or divide by 255"
    check_range(pixels, 1.0, 400, f"input {INPUT!r}", advice)
    return np.ascontiguousarray(pixels, dtype=np.float32)


def _batch_size(shape: Any, spec: MLPSpec, settings: Settings) -> int:
    accepted = [[spec.input_size], list(spec.input_shape[1:]), list(spec.input_shape)]
    if (
        not isinstance(shape, list)
        or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape)
        or shape[1:] not in accepted
        or shape[0] < 1
    ):
        forms = ", ".join(str(["B", *form]).replace("'", "") for form in accepted)
        raise ApiError(
            400, f"input {INPUT!r}: shape {quote(shape)} is not accepted; send {forms} with B >= 1"
        )
    if shape[0] > settings.max_instances:
        raise ApiError(
            413, f"{shape[0]} instances in one request; at most {settings.max_instances}, send the rest apart"
        )
    return int(shape[0])


def _binary_values(
    tensor: dict[str, Any],
    size: Any,
    binary: bytes | None,
    count: int,
    dtype: np.dtype,
    datatype: str,
    shape: Any,
) -> np.ndarray:
    if "data" in tensor:
        raise ApiError(400, f"input {INPUT!r} has both data and binary_data_size; send one of them")
    if binary is None:
        raise ApiError(
            400,
            "binary_data_size needs the Inference-Header-Content-Length header giving the JSON header's "
            "length, with the tensor's bytes after it",
        )
    expected = count * dtype.itemsize
    if size != expected or isinstance(size, bool):
        raise ApiError(
            400,
            f"input {INPUT!r}: binary_data_size {quote(size)} does not match shape {shape} of "
            f"{datatype}, which is {expected} bytes",
        )
    if len(binary) != expected:
        raise ApiError(
            400,
            f"input {INPUT!r} declares {expected} bytes of binary data, but the body carries "
            f"{len(binary)} after the JSON header",
        )
    return np.frombuffer(binary, dtype=dtype)


def _json_values(data: Any, datatype: str, booleans: bool) -> np.ndarray:
    """`data`, flat or nested row-major, -> the values as one flat array of the datatype; `booleans`
    as in `json_numbers`."""
    if not isinstance(data, list):
        raise ApiError(
            400,
            f"input {INPUT!r}: data must be a list of numbers (flat or nested), or binary tensor data "
            "with binary_data_size",
        )
    array = json_numbers(data, booleans)
    if array is None:
        raise ApiError(400, f"input {INPUT!r}: data must be a rectangular list of numbers (no booleans)")
    if datatype == "FP32":
        return array.reshape(-1)  # range-checked as float64, so 1e300 is out of range, not "inf"
    advice = "UINT8 values must be integers in [0, 255]; send [0, 1] values as FP32"
    check_range(array, 255, 400, f"input {INPUT!r}", advice)
    if array.dtype.kind == "f" and not np.array_equal(array, np.floor(array)):
        raise ApiError(400, advice)
    return array.reshape(-1).astype(np.uint8)


def _requested_outputs(
    outputs: Any, uncertainty: bool, binary_default: bool, settings: Settings, conformal: bool = False
) -> tuple[RequestedOutput, ...]:
    available = (
        PREDICTION_OUTPUTS
        + (UNCERTAINTY_OUTPUTS if uncertainty else ())
        + (CONFORMAL_OUTPUTS if conformal else ())
    )
    if outputs is None or outputs == []:
        return tuple(RequestedOutput(name, binary_default) for name in available)
    if not isinstance(outputs, list):
        raise ApiError(
            400, f'"outputs" must be a list of {{"name": ...}} objects, from: {", ".join(available)}'
        )
    requested: list[RequestedOutput] = []
    for item in outputs:
        output = _object(item, "each requested output")
        _known_keys(output, ("name", "parameters"), "a requested output")
        name = output.get("name")
        if name in CONFORMAL_OUTPUTS and not conformal:
            raise ApiError(
                400,
                f"output {name!r} is a conformal prediction set; send the request parameter coverage "
                "(a calibrated level such as 0.99) with mc_samples",
            )
        if name in UNCERTAINTY_OUTPUTS and not uncertainty:
            raise ApiError(
                400,
                f"output {name!r} comes from MC-dropout passes; send the request parameter mc_samples "
                f"(1 to {settings.mc_samples_max}), and optionally seed",
            )
        if name not in available:
            raise ApiError(400, f"unknown output {quote(name)}; this model's outputs: {', '.join(available)}")
        if any(r.name == name for r in requested):
            raise ApiError(400, f"output {name!r} is requested twice; ask for it once")
        parameters = _object(output.get("parameters", {}), f"output {name!r} parameters")
        if "classification" in parameters:
            raise ApiError(
                400, "the classification extension is not supported; ask for `label` and `probabilities`"
            )
        _known_keys(parameters, ("binary_data",), f"output {name!r} parameters")
        binary = parameters.get("binary_data", binary_default)
        if not isinstance(binary, bool):
            raise ApiError(400, f"output {name!r}: binary_data must be true or false, got {quote(binary)}")
        requested.append(RequestedOutput(name, binary))
    return tuple(requested)


def _object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ApiError(400, f"{what} must be a JSON object, got {quote(value)}")
    return value


def _known_keys(value: dict[str, Any], known: tuple[str, ...], what: str) -> None:
    for key in value:
        if key not in known:
            raise ApiError(400, f"{what}: unknown field {quote(key)}; the fields are {', '.join(known)}")
