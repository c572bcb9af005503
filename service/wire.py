"""Frames between the server and its inference process: a JSON header and raw numpy arrays.

A frame is `<header bytes> <payload bytes>` as two little-endian uint32s, the header (JSON, with
each array's dtype and shape under "arrays"), then the arrays' bytes, each padded to 8 bytes so
that every array reads back aligned. Nothing is unpickled: an array is its dtype (one of a short
list of plain numeric types), its shape and its bytes.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Sequence
from typing import Any

import numpy as np
import orjson

_PREFIX = struct.Struct("<II")  # header bytes, payload bytes
_ALIGN = 8
DTYPES = frozenset({"<f4", "<f8", "<i8", "|u1"})
"""The array types a frame may carry: float32, float64, int64, uint8."""

_RECEIVE_CHUNK = 1 << 16  # one recv reads a typical reply whole: each recv may hand the GIL over


class WireError(Exception):
    """A frame that breaks the format (a bug or a foreign peer, never a client's input)."""


Frame = tuple[dict[str, Any], list[np.ndarray]]


def encode(header: dict[str, Any], arrays: Sequence[np.ndarray] = ()) -> bytes:
    """One frame's bytes: a single buffer, so that it goes out in one send."""
    contiguous = [np.ascontiguousarray(a) for a in arrays]
    for a in contiguous:
        if a.dtype.str not in DTYPES:
            raise WireError(f"arrays of {a.dtype} cannot be sent")
    head = orjson.dumps({**header, "arrays": [[a.dtype.str, a.shape] for a in contiguous]})
    parts: list[bytes | memoryview] = []
    for a in contiguous:
        parts.append(a.data)  # copied once, into the frame
        parts.append(b"\0" * (-a.nbytes % _ALIGN))
    payload = sum(a.nbytes + -a.nbytes % _ALIGN for a in contiguous)
    return b"".join([_PREFIX.pack(len(head), payload), head, *parts])


def send(sock: socket.socket, header: dict[str, Any], arrays: Sequence[np.ndarray] = ()) -> None:
    sock.sendall(encode(header, arrays))


def receive(sock: socket.socket) -> Frame | None:
    """The next frame, or None when the peer closed the connection between frames."""
    buffer = bytearray(_RECEIVE_CHUNK)
    filled, needed = 0, _PREFIX.size
    while filled < needed:
        if needed > len(buffer):  # a frame larger than one chunk: room for all of it
            buffer.extend(bytes(needed - len(buffer)))
        with memoryview(buffer) as view:
            count = sock.recv_into(view[filled:])
        if count == 0:
            if filled == 0:
                return None
            raise WireError("the peer closed the connection inside a frame")
        filled += count
        if needed == _PREFIX.size and filled >= needed:
            head_bytes, payload_bytes = _PREFIX.unpack_from(buffer)
            needed += head_bytes + payload_bytes
    if filled > needed:
        raise WireError("bytes after the end of a frame: the peer sent two without waiting")
    return decode(memoryview(buffer)[:needed])


def decode(frame: memoryview) -> Frame:
    """A whole frame -> (header, arrays); the arrays are views into the frame's buffer."""
    head_bytes, payload_bytes = _PREFIX.unpack_from(frame)
    if len(frame) != _PREFIX.size + head_bytes + payload_bytes:
        raise WireError("frame length does not match its prefix")
    header = orjson.loads(frame[_PREFIX.size : _PREFIX.size + head_bytes])
    if not isinstance(header, dict) or not isinstance(header.get("arrays"), list):
        raise WireError("frame header is not an object with an array list")
    offset = _PREFIX.size + head_bytes
    arrays = []
    for spec in header.pop("arrays"):
        dtype, shape = spec
        if dtype not in DTYPES or not all(isinstance(n, int) and n >= 0 for n in shape):
            raise WireError(f"unsupported array {spec!r}")
        count = int(np.prod(shape, dtype=np.int64))
        nbytes = count * np.dtype(dtype).itemsize
        if offset + nbytes > len(frame):
            raise WireError("array runs past the end of the frame")
        arrays.append(np.frombuffer(frame, dtype=dtype, count=count, offset=offset).reshape(shape))
        offset += nbytes + (-nbytes % _ALIGN)
    return header, arrays
