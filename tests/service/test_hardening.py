"""Bad input an attacker would send: every case a clear 4xx with the envelope, never a 5xx."""

from __future__ import annotations

import base64
import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from tests.service.test_api import assert_error


def chunk(kind: bytes, data: bytes) -> bytes:
    return (
        struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    )


def png_declaring(width: int, height: int) -> bytes:
    """A small PNG whose header declares width x height pixels (its data are a few zero rows)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 1000))
        + chunk(b"IEND", b"")
    )


def png_with_text_bomb() -> bytes:
    """A valid 28x28 PNG carrying a zTXt chunk that inflates to 50 MB."""
    buffer = io.BytesIO()
    Image.new("L", (28, 28)).save(buffer, format="PNG")
    png = buffer.getvalue()
    text = b"Comment\x00\x00" + zlib.compress(b"a" * 50_000_000, 9)
    return png[:33] + chunk(b"zTXt", text) + png[33:]


def nan_tiff() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((28, 28), np.nan, dtype=np.float32), mode="F").save(buffer, format="TIFF")
    return buffer.getvalue()


def send_image(client, data: bytes, how: str):
    if how == "raw":
        return client.post("/v1/predict", content=data, headers={"content-type": "image/png"})
    if how == "multipart":
        return client.post("/v1/predict", files={"file": ("x.png", data, "image/png")})
    return client.post("/v1/predict", json={"instances": [{"b64": base64.b64encode(data).decode()}]})


@pytest.mark.parametrize("how", ["raw", "multipart", "b64"])
@pytest.mark.parametrize("side", [20_000, 50_000])
def test_a_header_declaring_a_huge_image_gets_413(client, how, side):
    assert_error(send_image(client, png_declaring(side, side), how), 413, "payload_too_large")


@pytest.mark.parametrize("how", ["raw", "multipart", "b64"])
def test_a_text_chunk_bomb_gets_413(client, how):
    assert_error(send_image(client, png_with_text_bomb(), how), 413, "payload_too_large")


def test_non_finite_image_pixels_get_422(client):
    response = client.post("/v1/predict", content=nan_tiff(), headers={"content-type": "image/tiff"})
    assert_error(response, 422, "invalid_value")


@pytest.mark.parametrize(
    "instance",
    [
        [True] * 784,
        [0.5] * 783 + [True],
        ["0.5"] * 784,
        [0.5] * 783 + ["0.5"],
        [0.5] * 783 + [None],
        [[0.5] * 784, [0.5] * 784],  # k x 784: one instance is one image
        [[0.5] * 28] * 27 + [[0.5] * 27],
    ],
    ids=["booleans", "one boolean", "numeric strings", "one string", "null", "2x784", "ragged"],
)
def test_pixels_must_be_json_numbers_in_the_exact_shape(client, instance):
    for body in ({"instances": [instance]}, {"instances": [[0.0] * 784, instance]}):
        assert_error(client.post("/v1/predict", json=body), 422, "invalid_value")
    # A boolean elsewhere in the body is fine.
    ok = client.post("/v1/uncertainty", json={"instances": [[0.5] * 784], "return_samples": False})
    assert ok.status_code == 200


def test_error_messages_quote_at_most_a_little_of_the_input(client):
    # A 150 kB seed (the test app's body bound is 200 kB) must not come back whole.
    response = client.post("/v1/uncertainty", json={"instances": [[0.0] * 784], "seed": "7" * 150_000})
    assert_error(response, 422, "invalid_value")
    assert len(response.content) < 500
