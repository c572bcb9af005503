"""Reader for the IDX format of the MNIST family (LeCun et al.), plain or gzip-compressed."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

_UBYTE = 0x08


class IDXError(ValueError):
    """The bytes are not a well-formed unsigned-byte IDX file."""


def parse_idx(data: bytes) -> np.ndarray:
    """Parse IDX bytes (gzip allowed) into a uint8 array of the declared shape."""
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    if len(data) < 4 or data[:2] != b"\x00\x00":
        raise IDXError("not an IDX file: bad magic number")
    dtype, ndim = data[2], data[3]
    if dtype != _UBYTE:
        raise IDXError(f"unsupported IDX element type 0x{dtype:02x}; only unsigned bytes")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise IDXError("truncated IDX header")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    expected = int(np.prod(shape, dtype=np.int64))
    if len(data) - header != expected:
        raise IDXError(f"IDX payload holds {len(data) - header} bytes, shape {shape} needs {expected}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def read_idx(path: Path) -> np.ndarray:
    return parse_idx(path.read_bytes())
