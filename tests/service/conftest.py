from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from service.http.app import create_app
from service.settings import Settings


@pytest.fixture
def settings(repository: Path) -> Settings:
    return Settings(
        model_repository=repository,
        mc_samples_max=500,
        max_instances=8,
        max_body_bytes=200_000,
    )


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as test_client:  # runs the lifespan
        yield test_client


def png_bytes(pixels: np.ndarray, mode: str = "L") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8), mode=mode).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def digit_png() -> bytes:
    """A 28x28 stroke on a dark background, MNIST style."""
    pixels = np.zeros((28, 28), dtype=np.uint8)
    pixels[6:22, 13:16] = 255
    return png_bytes(pixels)
