"""HTTP request bodies -> an InferenceRequest: pixels (B, 784) in [0, 1] plus MC options.

Accepted bodies, on every inference route: multipart/form-data with parts named `file`; a raw
`image/*` body; application/json `{"instances": [...]}` where each instance is a 28x28 nested array,
a flat 784 array, or `{"b64": "<base64 image>"}`. Options come from the JSON body or, for image
bodies, the query string.

The body is read whole (bounded by the body-size limit and `body_timeout_s`), then decoded: on the
event loop when it is small and its images are small (well under a millisecond), else in the
decode threads, so that no body, however costly, holds the loop.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import Executor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from fastapi import Request
from starlette.datastructures import UploadFile
from starlette.requests import ClientDisconnect

from models.artifact import LoadedModel
from models.spec import ConformalLevel
from service.http.errors import ApiError, quote
from service.http.images import ACCEPTED_MEDIA_TYPES, TooBigForTheLoop, decode_image
from service.settings import Settings

PIXELS = 784
MAX_SEED = 2**63 - 1
LOOP_BODY_BYTES = 64 * 1024
"""Bodies up to this size are decoded on the event loop (JSON of a few instances, a small PNG)..."""
LOOP_IMAGE_PIXELS = 256 * 256
"""...when none of their images declares more pixels than this...."""
LOOP_IMAGES = 4
"""...and they hold at most this many images."""
OPTION_FIELDS = ("samples", "seed", "return_samples", "return_input", "coverage")
"""Options a JSON body carries beside "instances" (image bodies send them as query parameters)."""


@dataclass(frozen=True)
class InferenceRequest:
    pixels: np.ndarray  # (B, 784) float32 in [0, 1]
    samples: int | None = None
    seed: int | None = None
    return_samples: bool = False
    return_input: bool = False  # echo the preprocessed 28x28 pixels in each prediction
    coverage: float | None = None  # a conformal level: adds prediction sets (checked against the model's)


async def read_inference_request(request: Request, settings: Settings, pool: Executor) -> InferenceRequest:
    """Read the body (408 past `body_timeout_s`), then decode it on the loop or in `pool`."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    options: dict[str, Any] = dict(request.query_params)
    async with reading_body(request, settings):
        body = await request.body()
        images = await _multipart_images(request, settings) if media_type == "multipart/form-data" else []

    def decode(budget: int | None) -> InferenceRequest:
        return _decode(media_type, body, images, options, settings, budget)

    if len(body) <= LOOP_BODY_BYTES:
        try:
            return decode(LOOP_IMAGE_PIXELS)
        except TooBigForTheLoop:
            pass
    return await asyncio.get_running_loop().run_in_executor(pool, decode, None)


@asynccontextmanager
async def reading_body(request: Request, settings: Settings) -> AsyncIterator[None]:
    """Refuse a compressed body (415, before reading it), bound the body's arrival by
    `body_timeout_s` (408) and answer a client that left mid-body with 400: nobody is left to read
    it, and it is not a server error."""
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding != "identity":
        raise ApiError(415, f"Content-Encoding {encoding[:50]!r} is not accepted; send the body uncompressed")
    try:
        async with asyncio.timeout(settings.body_timeout_s):
            yield
    except TimeoutError:
        message = f"the request body did not arrive within {settings.body_timeout_s:g} s"
        raise ApiError(408, message, headers={"Connection": "close"}) from None
    except ClientDisconnect:
        raise ApiError(400, "the client closed the connection before the body was complete") from None


def _decode(
    media_type: str,
    body: bytes,
    images: list[bytes],
    options: dict[str, Any],
    settings: Settings,
    budget: int | None,
) -> InferenceRequest:
    """The body's pixels and options; `budget` as in `decode_image`."""

    decoded = 0

    def image(data: bytes) -> np.ndarray:
        nonlocal decoded
        decoded += 1
        if budget is not None and decoded > LOOP_IMAGES:
            raise TooBigForTheLoop
        return decode_image(data, settings.max_image_pixels, budget).reshape(PIXELS)

    if media_type == "application/json" or media_type.endswith("+json"):
        parsed = parse_json(body, "NaN and Infinity are not JSON")
        if not isinstance(parsed, dict) or "instances" not in parsed:
            raise ApiError(400, 'the JSON body must be an object with an "instances" list')
        options = {**options, **{k: parsed[k] for k in OPTION_FIELDS if k in parsed}}
        booleans = b"true" in body or b"false" in body
        pixels = instances_to_pixels(parsed["instances"], settings, image, booleans)
    elif media_type == "multipart/form-data":
        pixels = np.stack([image(data) for data in images])
    elif media_type.startswith("image/"):
        if media_type not in ACCEPTED_MEDIA_TYPES:
            raise ApiError(
                415, f"{media_type} is not accepted; send one of {', '.join(ACCEPTED_MEDIA_TYPES)}"
            )
        pixels = image(body)[None]
    else:
        raise ApiError(
            415,
            f"unsupported content type {media_type[:100] or '(none)'!r}; send application/json "
            '{"instances": [...]}, multipart/form-data with `file` parts, or an image/* body',
        )
    return InferenceRequest(pixels=pixels, **parse_options(options, settings))


def parse_json(raw: bytes, advice: str) -> Any:
    """The body's JSON value; 400 with `advice` when it is not JSON."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise ApiError(400, f"malformed JSON ({e}); {advice}") from None


def instances_to_pixels(
    instances: Any, settings: Settings, image: Callable[[bytes], np.ndarray], booleans: bool = True
) -> np.ndarray:
    """JSON instances -> (B, 784) float32, validated vectorized: JSON numbers only, the exact shape,
    finite, in [0, 1]. `booleans`: the body may hold `true`/`false` somewhere, so numbers are checked
    one by one too (numpy would read True as 1.0)."""
    if not isinstance(instances, list) or not instances:
        raise ApiError(422, '"instances" must be a non-empty list')
    _check_count(len(instances), settings)
    if all(isinstance(item, list) for item in instances):  # fast path: one conversion for all
        batch = _numbers(instances, booleans)
        if batch is not None and batch.shape[1:] in ((28, 28), (PIXELS,)):
            return _check_pixels(batch.reshape(len(instances), PIXELS), "instances")
    return np.stack([_instance_pixels(i, item, image, booleans) for i, item in enumerate(instances)])


def _numbers(value: list[Any], booleans: bool) -> np.ndarray | None:
    """`json_numbers` as float32."""
    array = json_numbers(value, booleans)
    if array is None:
        return None
    with np.errstate(over="ignore"):  # past float32's range becomes inf, refused as not finite
        return array.astype(np.float32)


def json_numbers(value: list[Any], booleans: bool) -> np.ndarray | None:
    """A rectangular nested list of JSON numbers as an array; None when it is ragged or holds anything
    else (strings such as "0.5", booleans, objects, nulls). `booleans`: the body holds `true` or
    `false` somewhere, so look for them among the numbers (numpy reads True as 1)."""
    try:
        array = np.asarray(value)  # no dtype: strings stay strings and booleans booleans
    except (ValueError, TypeError, OverflowError):  # ragged, or a number numpy cannot hold
        return None
    if array.dtype.kind not in "iuf":
        return None
    if booleans and any(isinstance(x, bool) for x in _leaves(value)):
        return None  # True beside numbers became 1.0
    return array


def _leaves(value: list[Any]) -> Iterator[Any]:
    """The non-list values of a nested JSON list, in order."""
    for item in value:
        if isinstance(item, list):
            yield from _leaves(item)
        else:
            yield item


def _instance_pixels(
    index: int, item: Any, image: Callable[[bytes], np.ndarray], booleans: bool
) -> np.ndarray:
    if isinstance(item, dict) and set(item) == {"b64"} and isinstance(item["b64"], str):
        try:
            data = base64.b64decode(item["b64"], validate=True)
        except (binascii.Error, ValueError):
            raise ApiError(422, f"instance {index}: b64 is not valid base64") from None
        return image(data)
    if not isinstance(item, list):
        raise ApiError(422, f'instance {index}: expected a 28x28 array, a 784 array or {{"b64": ...}}')
    array = _numbers(item, booleans)
    if array is None:
        raise ApiError(
            422, f"instance {index}: not a rectangular array of JSON numbers (no strings or booleans)"
        )
    if array.shape not in ((28, 28), (PIXELS,)):
        shape = "x".join(str(s) for s in array.shape)
        raise ApiError(422, f"instance {index}: expected 28x28 or 784 pixel values, got shape {shape}")
    return _check_pixels(array.reshape(1, PIXELS), f"instance {index}")[0]


def _check_pixels(pixels: np.ndarray, where: str) -> np.ndarray:
    """(B, 784) float32 pixels, refused unless finite and in [0, 1]."""
    check_range(pixels, 1.0, 422, where, "pixel values must be in [0, 1]; divide 0-255 values by 255")
    return pixels


def check_range(values: np.ndarray, high: float, status: int, where: str, advice: str) -> None:
    """Refuse with `status` unless every value is finite and in [0, high]."""
    # min and max carry NaN through, so in the common case two reductions check everything
    if values.size and not (values.min() >= 0 and values.max() <= high):
        if values.dtype.kind == "f" and not np.isfinite(values).all():
            raise ApiError(status, f"{where}: values must be finite numbers (no NaN or infinity)")
        raise ApiError(status, f"{where}: {advice}")


async def _multipart_images(request: Request, settings: Settings) -> list[bytes]:
    """The bytes of each part named `file` (the body is already read: this parses it)."""
    try:
        form = await request.form(max_files=settings.max_instances + 1, max_fields=64)
    except Exception as e:  # starlette raises its own MultiPartException / HTTPException here
        raise ApiError(400, f"malformed multipart body: {str(getattr(e, 'detail', e))[:200]}") from None
    try:
        files = [part for part in form.getlist("file") if isinstance(part, UploadFile)]
        if not files:
            raise ApiError(400, "multipart body has no part named `file`; send the image as file=@digit.png")
        _check_count(len(files), settings)
        return [await f.read() for f in files]
    finally:
        await form.close()


def _check_count(count: int, settings: Settings) -> None:
    if count > settings.max_instances:
        raise ApiError(413, f"{count} instances in one request; at most {settings.max_instances}")


def parse_options(options: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """samples / seed / return_samples / return_input / coverage from JSON values or query strings,
    validated."""
    parsed: dict[str, Any] = {}
    if options.get("samples") is not None:
        samples = _as_int("samples", options["samples"])
        if not 1 <= samples <= settings.mc_samples_max:
            raise ApiError(422, f"samples must be between 1 and {settings.mc_samples_max}, got {samples}")
        parsed["samples"] = samples
    if options.get("seed") is not None:
        seed = _as_int("seed", options["seed"])
        if not 0 <= seed <= MAX_SEED:
            raise ApiError(422, f"seed must be between 0 and 2**63-1, got {seed}")
        parsed["seed"] = seed
    for name in ("return_samples", "return_input"):
        parsed[name] = _as_bool(name, options.get(name, False))
    if options.get("coverage") is not None:
        parsed["coverage"] = _as_coverage(options["coverage"])
    return parsed


def _as_coverage(value: Any) -> float:
    """A JSON number, or a query string such as 0.99, strictly between 0 and 1. Whether the model
    calibrated that level is the route's check: decoding does not know the model."""
    number: float | None = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str) and 0 < len(value) <= 20 and value.isascii():
        try:
            number = float(value)
        except ValueError:
            number = None
    if number is None or not 0.0 < number < 1.0:
        raise ApiError(
            422,
            f"coverage must be a number between 0 and 1, one of the model's calibrated levels such "
            f"as 0.99, got {quote(value)}",
        )
    return number


def conformal_level(loaded: LoadedModel, coverage: float) -> ConformalLevel:
    """The artifact's calibrated level equal to `coverage` (either API's option); 422 naming the
    levels it has."""
    manifest = loaded.manifest
    level = None if manifest.conformal is None else manifest.conformal.level(coverage)
    if level is not None:
        return level
    model = f"{manifest.name} version {manifest.version}"
    if manifest.conformal is None or not manifest.conformal.levels:
        raise ApiError(
            422,
            f"{model} has no calibrated prediction sets (it was trained before they existed); retrain it "
            "or leave out coverage",
        )
    levels = ", ".join(f"{lv.coverage:g}" for lv in manifest.conformal.levels)
    raise ApiError(422, f"coverage {coverage} is not calibrated for {model}; send one of {levels}")


def _as_bool(name: str, value: Any) -> bool:
    """A JSON boolean, or one of the query strings true / false / 1 / 0."""
    if isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):
        return value.lower() in ("true", "1")
    if not isinstance(value, bool):
        raise ApiError(422, f"{name} must be true or false")
    return value


MAX_INTEGER_DIGITS = 19  # 2**63 - 1 has 19


def _as_int(name: str, value: Any) -> int:
    """A JSON integer, or a string of at most 19 ASCII digits (a leading '-' allowed, refused later
    by the range check): never int()'s Unicode digits, underscores or signs in odd places."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        digits = value.removeprefix("-")
        if 0 < len(digits) <= MAX_INTEGER_DIGITS and digits.isascii() and digits.isdigit():
            return int(value)
    raise ApiError(
        422, f"{name} must be an integer of at most {MAX_INTEGER_DIGITS} digits, got {quote(value)}"
    )
