import io

import numpy as np
import pytest
from PIL import Image

from service.http.errors import ApiError
from service.http.images import decode_image, mnist_layout
from tests.service.conftest import png_bytes

LIMIT = 10_000_000


def encode(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def test_28x28_dark_background_is_used_as_is():
    pixels = np.zeros((28, 28), dtype=np.uint8)
    pixels[5:20, 10:12] = 200
    decoded = decode_image(png_bytes(pixels), LIMIT)
    assert decoded.dtype == np.float32 and decoded.shape == (28, 28)
    assert np.allclose(decoded, pixels / 255.0)


def test_light_background_is_inverted():
    pixels = np.full((28, 28), 255, dtype=np.uint8)
    pixels[5:20, 10:12] = 0  # black ink on white paper
    decoded = decode_image(png_bytes(pixels), LIMIT)
    assert decoded[0, 0] == 0.0 and decoded[10, 10] == 1.0


def test_transparency_is_composited_over_white():
    rgba = np.zeros((28, 28, 4), dtype=np.uint8)  # fully transparent everywhere...
    rgba[5:20, 10:12] = (0, 0, 0, 255)  # ...but an opaque black stroke
    decoded = decode_image(png_bytes(rgba, mode="RGBA"), LIMIT)
    # Transparent -> white paper -> inverted to a dark ground; the black stroke becomes ink.
    assert decoded[0, 0] == 0.0 and decoded[10, 10] == 1.0


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "BMP", "GIF", "TIFF", "WEBP"])
def test_every_accepted_format_decodes(fmt):
    image = Image.new("RGB", (28, 28), "black")
    image.paste((255, 255, 255), (12, 4, 16, 24))
    decoded = decode_image(encode(image, fmt), LIMIT)
    assert decoded.shape == (28, 28)
    assert decoded[14, 14] > 0.8 and decoded[0, 0] < 0.1


def test_other_sizes_follow_the_mnist_recipe():
    # A 200x100 white canvas with a black bar off to one side.
    image = np.full((100, 200), 255, dtype=np.uint8)
    image[10:90, 20:40] = 0
    decoded = decode_image(png_bytes(image), LIMIT)
    assert decoded.shape == (28, 28)
    rows = np.flatnonzero(decoded.max(1) > 0.1)
    cols = np.flatnonzero(decoded.max(0) > 0.1)
    assert rows[-1] - rows[0] + 1 <= 21  # fitted to a 20x20 box (plus resampling fringe)
    assert rows[-1] - rows[0] + 1 >= 19  # the long side fills it
    assert cols[-1] - cols[0] + 1 < 10  # aspect kept: 80x20 -> 20x5
    ys, xs = np.indices(decoded.shape)
    mass = decoded.sum()
    assert abs((ys * decoded).sum() / mass - 13.5) <= 1.0  # centred by centre of mass
    assert abs((xs * decoded).sum() / mass - 13.5) <= 1.0


def test_blank_image_gives_blank_input():
    assert mnist_layout(np.zeros((50, 50), dtype=np.float32)).max() == 0.0


@pytest.mark.parametrize(
    "data, status",
    [(b"", 400), (b"definitely not an image", 415), (b"\x89PNG\r\n\x1a\n" + b"\x00" * 30, 415)],
)
def test_undecodable_bytes_are_refused(data, status):
    with pytest.raises(ApiError) as caught:
        decode_image(data, LIMIT)
    assert caught.value.status == status


def test_truncated_image_is_refused():
    data = png_bytes(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8))
    with pytest.raises(ApiError) as caught:
        decode_image(data[: len(data) // 2], LIMIT)
    assert caught.value.status == 400


def test_oversized_image_is_refused_before_decoding():
    with pytest.raises(ApiError) as caught:
        decode_image(png_bytes(np.zeros((100, 100))), max_pixels=9_999)
    assert caught.value.status == 413
