"""Properties of the image decoder (hypothesis): whatever the bytes, the answer is a 4xx refusal or
a (28, 28) float32 array in [0, 1]; every valid image of any mode and size is accepted."""

from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from service.http.errors import ApiError
from service.http.images import decode_image

MAX_PIXELS = 1_000_000
# Each mode with the formats Pillow can write it in.
MODES = {
    "1": ["PNG", "BMP", "TIFF", "GIF"],
    "L": ["PNG", "JPEG", "BMP", "TIFF", "GIF", "WEBP"],
    "P": ["PNG", "BMP", "TIFF", "GIF"],
    "RGB": ["PNG", "JPEG", "BMP", "TIFF", "GIF", "WEBP"],
    "RGBA": ["PNG", "TIFF", "GIF", "WEBP"],
    "LA": ["PNG", "TIFF"],
    "CMYK": ["JPEG", "TIFF"],
    "I": ["TIFF"],
    "I;16": ["PNG", "TIFF"],
    "F": ["TIFF"],
}


def assert_decoded_or_refused(data: bytes) -> np.ndarray | None:
    try:
        pixels = decode_image(data, MAX_PIXELS)
    except ApiError as refusal:
        assert 400 <= refusal.status < 500, refusal.message
        assert refusal.message and len(refusal.message) < 400
        return None
    assert pixels.shape == (28, 28) and pixels.dtype == np.float32
    assert np.all(np.isfinite(pixels)) and pixels.min() >= 0.0 and pixels.max() <= 1.0
    return pixels


@settings(max_examples=300, deadline=None, database=None)
@given(st.binary(max_size=4096))
def test_arbitrary_bytes_are_refused_with_a_4xx_or_decoded(data: bytes):
    assert_decoded_or_refused(data)


@st.composite
def images(draw: st.DrawFn) -> tuple[bytes, str, str]:
    mode = draw(st.sampled_from(sorted(MODES)))
    image_format = draw(st.sampled_from(MODES[mode]))
    width, height = draw(st.integers(1, 300)), draw(st.integers(1, 300))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    kind = draw(st.sampled_from(["noise", "flat", "stroke"]))
    base = rng.integers(0, 256, (height, width, 4), dtype=np.uint8)
    if kind == "flat":
        base[:] = base[0, 0]
    elif kind == "stroke":  # a digit-like stroke on a flat ground
        base[:] = base[0, 0]
        base[height // 4 : 3 * height // 4 + 1, width // 2 : width // 2 + max(1, width // 8)] = (
            255 - base[0, 0]
        )
    image = Image.fromarray(base, "RGBA")
    if mode == "F":
        image = Image.fromarray(
            base[..., 0].astype(np.float32) * draw(st.sampled_from([1.0, -1.0, 1e6])), "F"
        )
    elif mode == "I":
        image = Image.fromarray(base[..., 0].astype(np.int32) * 257, "I")
    elif mode == "I;16":
        image = Image.fromarray(base[..., 0].astype(np.int32) * 257, "I").convert("I;16")
    else:
        image = image.convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format=image_format)
    return buffer.getvalue(), mode, image_format


@settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(images())
def test_every_valid_image_of_any_mode_and_size_is_accepted(image: tuple[bytes, str, str]):
    data, mode, image_format = image
    pixels = assert_decoded_or_refused(data)
    assert pixels is not None, f"a valid {mode} {image_format} was refused"


@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow on corrupt TIFF tags
@settings(max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(images(), st.data())
def test_damaged_images_are_refused_with_a_4xx_or_decoded(image: tuple[bytes, str, str], data: st.DataObject):
    raw = bytearray(image[0])
    damage = data.draw(st.sampled_from(["truncate", "flip", "splice"]))
    if damage == "truncate":
        raw = raw[: data.draw(st.integers(0, len(raw)))]
    elif damage == "flip":
        for _ in range(data.draw(st.integers(1, 16))):
            position = data.draw(st.integers(0, len(raw) - 1))
            raw[position] ^= data.draw(st.integers(1, 255))
    else:
        position = data.draw(st.integers(0, len(raw)))
        raw[position:position] = data.draw(st.binary(min_size=1, max_size=64))
    assert_decoded_or_refused(bytes(raw))
