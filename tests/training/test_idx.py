import gzip
import struct

import numpy as np
import pytest

from training.idx import IDXError, parse_idx


def idx_bytes(array: np.ndarray) -> bytes:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def test_parses_images_and_labels_plain_and_gzipped():
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    labels = np.array([7, 1], dtype=np.uint8)
    assert np.array_equal(parse_idx(idx_bytes(images)), images)
    assert np.array_equal(parse_idx(gzip.compress(idx_bytes(labels))), labels)


@pytest.mark.parametrize(
    "data, message",
    [
        (b"\x01\x00\x08\x01\x00\x00\x00\x01\x05", "magic"),
        (b"\x00\x00\x0d\x01\x00\x00\x00\x01\x05", "element type"),
        (b"\x00\x00\x08\x03\x00\x00", "truncated"),
        (struct.pack(">BBBBI", 0, 0, 8, 1, 3) + b"\x01\x02", "needs 3"),
    ],
)
def test_malformed_files_are_refused(data, message):
    with pytest.raises(IDXError, match=message):
        parse_idx(data)
