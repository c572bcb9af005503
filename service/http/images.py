"""Image bytes -> a (28, 28) float32 array in [0, 1], a light digit on a dark ground like MNIST.

decode; composite transparency over white; grayscale; invert when the background is light;
a 28x28 image is used as is, any other size goes through the MNIST recipe (crop to the ink, fit a
20x20 box keeping aspect, centre by centre of mass in 28x28).
"""

from __future__ import annotations

import io
import struct
import warnings

import numpy as np
from PIL import Image, UnidentifiedImageError

from service.http.errors import ApiError

SIDE = 28
BOX = 20  # MNIST digits were fitted to 20x20 and centred by mass in 28x28
ACCEPTED_FORMATS = ("PNG", "JPEG", "BMP", "GIF", "TIFF", "WEBP")
ACCEPTED_MEDIA_TYPES = (*(f"image/{f.lower()}" for f in ACCEPTED_FORMATS), "image/jpg")


class TooBigForTheLoop(Exception):
    """The image declares more pixels than the caller is willing to decode where it runs."""


def decode_image(data: bytes, max_pixels: int, budget: int | None = None) -> np.ndarray:
    """Decode and preprocess one image; refusals are ApiErrors with a 4xx status. With `budget`,
    an image declaring more pixels than that raises TooBigForTheLoop before it is decoded."""
    image = _open(data, max_pixels, budget)
    gray = _to_grayscale(image)  # (H, W) float32, 0 = black, 1 = white
    if not np.isfinite(gray).all():  # a floating-point TIFF can hold NaN or infinity
        raise ApiError(422, f"the {image.format} image holds non-finite pixel values")
    if _background_is_light(gray):
        gray = 1.0 - gray
    if gray.shape == (SIDE, SIDE):
        return gray
    return mnist_layout(gray)


def _open(data: bytes, max_pixels: int, budget: int | None) -> Image.Image:
    if not data:
        raise ApiError(400, "empty image; send the bytes of a PNG, JPEG, BMP, GIF, TIFF or WebP file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own bound is below
            image = Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
    except UnidentifiedImageError:
        raise ApiError(415, "not a supported image; send PNG, JPEG, BMP, GIF, TIFF or WebP bytes") from None
    except Image.DecompressionBombError:  # past twice Pillow's own bound, refused on the header alone
        raise ApiError(
            413, f"the image declares too many pixels; at most {max_pixels} are accepted"
        ) from None
    except (OSError, ValueError, SyntaxError, EOFError, struct.error) as e:
        raise _unreadable(e, "the image's header could not be read") from None
    width, height = image.size
    if width * height > max_pixels:
        raise ApiError(413, f"image is {width}x{height}; at most {max_pixels} pixels are accepted")
    if budget is not None and width * height > budget:
        raise TooBigForTheLoop
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image.seek(0)  # first frame of an animation
            image.load()
    except Image.DecompressionBombWarning:
        raise ApiError(
            413, f"the image decodes to too many pixels; at most {max_pixels} are accepted"
        ) from None
    except (OSError, ValueError, SyntaxError, EOFError, struct.error) as e:
        raise _unreadable(e, f"the {image.format} image could not be decoded; is it truncated?") from None
    return image


def _unreadable(error: Exception, what: str) -> ApiError:
    """Pillow's refusal as ours: 413 for a metadata chunk that inflates past Pillow's bound
    (PngImagePlugin.MAX_TEXT_CHUNK, a ValueError saying so), else 400."""
    detail = str(error)[:100]
    if isinstance(error, ValueError) and "too large" in detail.lower():
        return ApiError(413, f"the image's metadata decompresses past the bound ({detail})")
    return ApiError(400, f"{what} ({detail})")


def _to_grayscale(image: Image.Image) -> np.ndarray:
    has_alpha = image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info
    if has_alpha:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, rgba)
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        array = np.asarray(image, dtype=np.float32)
        peak = 65535.0 if image.mode.startswith("I;16") else max(1.0, float(array.max()))
        with np.errstate(invalid="ignore"):  # inf / inf is NaN: refused as not finite by the caller
            return np.clip(array / peak, 0.0, 1.0)
    return np.asarray(image.convert("L"), dtype=np.float32) / 255.0


def _background_is_light(gray: np.ndarray) -> bool:
    """The border's median decides: MNIST wants a dark background."""
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    return float(np.median(border)) > 0.5


def mnist_layout(ink: np.ndarray) -> np.ndarray:
    """(H, W) ink on dark ground -> (28, 28): crop to ink, fit 20x20 keeping aspect, centre by mass."""
    rows = np.flatnonzero(ink.max(axis=1) > 0.1)
    cols = np.flatnonzero(ink.max(axis=0) > 0.1)
    if rows.size == 0:  # no ink at all: a blank canvas is the honest answer
        return np.zeros((SIDE, SIDE), dtype=np.float32)
    crop = ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    height, width = crop.shape
    scale = BOX / max(height, width)
    new_h, new_w = max(1, round(height * scale)), max(1, round(width * scale))
    patch = Image.fromarray((crop * 255).astype(np.uint8)).resize((new_w, new_h), Image.Resampling.LANCZOS)
    fitted = np.asarray(patch, dtype=np.float32) / 255.0  # (new_h, new_w)

    mass = fitted.sum()
    ys, xs = np.indices(fitted.shape)
    centre_y = (ys * fitted).sum() / mass if mass > 0 else (new_h - 1) / 2
    centre_x = (xs * fitted).sum() / mass if mass > 0 else (new_w - 1) / 2
    top = int(np.clip(round(SIDE / 2 - 0.5 - centre_y), 0, SIDE - new_h))
    left = int(np.clip(round(SIDE / 2 - 0.5 - centre_x), 0, SIDE - new_w))
    canvas = np.zeros((SIDE, SIDE), dtype=np.float32)
    canvas[top : top + new_h, left : left + new_w] = fitted
    return np.clip(canvas, 0.0, 1.0)
