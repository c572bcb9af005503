"""Bad input an attacker would send: every case a clear 4xx with the envelope, never a 5xx."""

from __future__ import annotations

import base64
import io
import logging
import struct
import zlib

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from service.http.app import create_app
from service.settings import Settings
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


def test_an_unexpected_exception_is_one_500_envelope_and_one_log_line(client, caplog, capsys, monkeypatch):
    async def broken(*args, **kwargs):
        raise RuntimeError("a bug " + "x" * 1000)

    monkeypatch.setattr(client.app.state.serving.engine, "predict", broken)
    caplog.set_level(logging.INFO)
    # The TestClient re-raises whatever escapes the app (as uvicorn would log its traceback): nothing does.
    response = client.post(
        "/v1/predict", json={"instances": [[0.5] * 784]}, headers={"x-request-id": "r-500"}
    )
    assert_error(response, 500, "internal")
    assert response.json()["error"]["request_id"] == response.headers["x-request-id"] == "r-500"
    assert "r-500" in response.json()["error"]["message"]
    errors = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(errors) == 1, [r.getMessage() for r in errors]
    (line,) = errors
    assert line.getMessage().startswith("500 for POST /v1/predict (request r-500): RuntimeError: a bug")
    assert len(line.getMessage()) < 300 and line.exc_info is None
    assert not [r for r in caplog.records if r.exc_info], "no traceback at INFO"
    access = [line for line in capsys.readouterr().err.splitlines() if "service.access" in line]
    assert [line.split(": ", 1)[1].split()[2] for line in access] == ["500"]  # the access log saw it too

    caplog.clear()
    caplog.set_level(logging.DEBUG, logger="service.http.errors")
    client.post("/v1/predict", json={"instances": [[0.5] * 784]})
    (traceback,) = [r for r in caplog.records if r.exc_info]
    assert traceback.levelno == logging.DEBUG


def chunked(data: bytes, size: int = 8192):
    for start in range(0, len(data), size):
        yield data[start : start + size]


def test_a_chunked_body_over_the_limit_gets_413(client, settings, digit_png):
    # No Content-Length: the limit is found while the chunks arrive, for every kind of body.
    big = digit_png + b"\0" * settings.max_body_bytes
    multipart = (
        b"--b\r\ncontent-disposition: form-data; name=file; filename=d.png\r\ncontent-type: image/png\r\n\r\n"
        + big
        + b"\r\n--b--\r\n"
    )
    for content_type, body in [
        ("multipart/form-data; boundary=b", multipart),
        ("image/png", big),
        ("application/json", b'{"instances": [' + b" " * settings.max_body_bytes + b"]}"),
    ]:
        response = client.post("/v1/predict", content=chunked(body), headers={"content-type": content_type})
        assert_error(response, 413, "payload_too_large")
        assert response.request.headers["transfer-encoding"] == "chunked"
    ok = client.post(
        "/v1/predict", content=chunked(digit_png, 100), headers={"content-type": "image/png"}
    )  # a small chunked body is fine
    assert ok.status_code == 200, ok.text


# What held before issue 18 and must keep holding.


@pytest.mark.parametrize(
    "body",
    [
        b'{"instances": ' + b"[" * 50_000 + b"]" * 50_000 + b"}",
        b'{"instances": [[NaN]]}',
        b'{"instances": [[1e309]]}',
        b'{"instances": [[Infinity]]}',
    ],
    ids=["nested 50k deep", "NaN literal", "1e309", "Infinity literal"],
)
def test_json_that_is_not_json_gets_400(client, body):
    response = client.post("/v1/predict", content=body, headers={"content-type": "application/json"})
    assert_error(response, 400, "bad_request")


def test_a_million_instances_get_413(repository):
    settings = Settings(model_repository=repository, max_body_bytes=50_000_000)
    with TestClient(create_app(settings)) as client:
        response = client.post("/v1/predict", json={"instances": [[0.0]] * 1_000_000})
    assert_error(response, 413, "payload_too_large")
    assert "1000000 instances" in response.json()["error"]["message"]


def image_bytes(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def test_unusual_but_valid_images_are_accepted(repository):
    frames = [Image.new("L", (28, 28), color) for color in range(0, 250, 50)] * 1000  # 5000 frames
    gif = image_bytes(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=1)
    sixteen_bit = image_bytes(Image.fromarray(np.full((28, 28), 40_000, dtype=np.uint16)), "PNG")
    cmyk = image_bytes(Image.new("CMYK", (40, 40), (0, 0, 0, 255)), "JPEG")
    tiff = image_bytes(Image.new("L", (28, 28), 200), "TIFF")
    kinds = [(gif, "image/gif"), (sixteen_bit, "image/png"), (cmyk, "image/jpeg"), (tiff, "image/tiff")]
    with TestClient(create_app(Settings(model_repository=repository))) as client:  # a 10 MiB body bound
        for data, media_type in kinds:
            response = client.post("/v1/predict", content=data, headers={"content-type": media_type})
            assert response.status_code == 200, (media_type, response.text)


def test_svg_and_pdf_get_415(client):
    svg = b'<svg xmlns="http://www.w3.org/2000/svg" width="28" height="28"/>'
    pdf = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF"
    for data, media_type in [(svg, "image/svg+xml"), (pdf, "application/pdf"), (pdf, "image/png")]:
        response = client.post("/v1/predict", content=data, headers={"content-type": media_type})
        assert_error(response, 415, "unsupported_media_type")
        multipart = client.post("/v1/predict", files={"file": ("x", data, media_type)})
        assert_error(multipart, 415, "unsupported_media_type")


@pytest.mark.parametrize(
    "path",
    [
        "/v1/models/..%2F..%2Fetc%2Fpasswd/predict",
        "/v1/models/%2E%2E/predict",
        "/v1/models/..%5C..%5Cwindows/predict",
        "/v1/models/mnist-mlp/versions/..%2F1/predict",
        "/v1/models/mnist-mlp/versions/1%2F..%2F..%2F2/predict",
        "/v1/models/..%2Fmnist-mlp/versions/1/card/model.json",
        "/v1/models/mnist-mlp/versions/1/card/..%2Fmodel.safetensors",
    ],
)
def test_path_traversal_gets_404_or_422(client, path):
    method = client.get if "/card/" in path else client.post
    response = method(path, json={"instances": [[0.0] * 784]}) if method == client.post else method(path)
    assert response.status_code in (404, 422), response.text
    assert set(response.json()) == {"error"}


BAD_AUTHORIZATIONS = [
    None,
    "",
    "Bearer",
    "Bearer ",
    "bearer wrong-key-0123456789abcdef",
    "Basic dXNlcjpwYXNz",
    "Token k" + "k" * 31,
    "Bearer " + "k" * 31,
    "Bearer " + "k" * 33,
    "Bearer " + "K" * 32,
    "Bearer " + "k" * 32 + "x",
    "Bearer  x" + "k" * 31,
    "k" * 32,
    "Bearer " + "ķ" * 32,
    "Bearer " + "k" * 16 + "\t" + "k" * 15,
]


def test_fifteen_wrong_authorizations_get_401_with_the_envelope(repository):
    key = "k" * 32
    with TestClient(create_app(Settings(model_repository=repository, api_key=key))) as client:
        for header in BAD_AUTHORIZATIONS:
            headers = {} if header is None else {"authorization": header.encode("utf-8")}
            response = client.post("/v1/predict", json={"instances": [[0.0] * 784]}, headers=headers)
            assert_error(response, 401, "unauthorized")
            assert response.headers["www-authenticate"] == "Bearer", header
    assert len(BAD_AUTHORIZATIONS) == 15


def test_a_rejected_key_never_reaches_stderr(monkeypatch, capsys):
    from service.__main__ import main

    monkeypatch.setenv("DROPSERVE_API_KEY", "tooshort-secret")
    assert main() == 2
    error = capsys.readouterr().err
    assert "api_key" in error and "tooshort-secret" not in error


def test_a_body_budget_below_the_largest_body_is_refused_at_start_up():
    # the largest body allowed could never be taken in
    with pytest.raises(ValueError, match="max_buffered_bytes"):
        Settings(max_body_bytes=2_000_000, max_buffered_bytes=1_000_000)
