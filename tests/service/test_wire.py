"""Frames between the server and its inference process: arrays come back as they went, and a
broken frame is an error, never a guess."""

from __future__ import annotations

import socket
import struct
import threading

import numpy as np
import orjson
import pytest

from service import wire


def round_trip(header: dict, arrays: list[np.ndarray]) -> wire.Frame | None:
    """Send one frame from a thread (a large one fills the socket's buffer) and receive it."""
    ours, theirs = socket.socketpair()
    with ours, theirs:
        ours.settimeout(10)  # a sender that failed fails the test instead of hanging it
        sender = threading.Thread(target=wire.send, args=(theirs, header, arrays))
        sender.start()
        frame = wire.receive(ours)
        sender.join()
    return frame


def test_arrays_of_every_allowed_type_and_shape_come_back_equal():
    rng = np.random.default_rng(0)
    arrays = [
        rng.random((3, 784), dtype=np.float32),
        rng.random((5, 10)),  # float64
        np.arange(7, dtype=np.int64),
        np.frombuffer(b"abc", dtype=np.uint8),  # 3 bytes: the next array starts padded
        np.zeros((0, 10), dtype=np.float32),
        np.asfortranarray(rng.random((4, 6))),  # not C-contiguous: sent in C order
    ]
    frame = round_trip({"op": "predict", "seeds": [1, 2]}, arrays)
    assert frame is not None
    header, received = frame
    assert header == {"op": "predict", "seeds": [1, 2]}
    assert len(received) == len(arrays)
    for sent, got in zip(arrays, received, strict=True):
        assert got.dtype == sent.dtype and got.shape == sent.shape
        assert np.array_equal(got, sent)
        assert got.flags.writeable  # torch.from_numpy takes it without a warning


def test_a_frame_larger_than_a_receive_chunk_arrives_whole():
    big = np.random.default_rng(1).random((1000, 784), dtype=np.float32)  # 3 MB
    frame = round_trip({}, [big])
    assert frame is not None
    assert np.array_equal(frame[1][0], big)


def test_a_closed_socket_between_frames_ends_the_stream():
    ours, theirs = socket.socketpair()
    theirs.close()
    with ours:
        assert wire.receive(ours) is None


def test_a_socket_closed_inside_a_frame_is_an_error():
    ours, theirs = socket.socketpair()
    with ours:
        with theirs:
            theirs.sendall(wire.encode({}, [np.ones(100, dtype=np.float32)])[:-10])
        with pytest.raises(wire.WireError, match="inside a frame"):
            wire.receive(ours)


def test_object_arrays_are_refused_before_anything_is_sent():
    with pytest.raises(wire.WireError, match="cannot be sent"):
        wire.encode({}, [np.array([{"a": 1}], dtype=object)])


def frame_with(header: dict, payload: bytes) -> memoryview:
    head = orjson.dumps(header)
    return memoryview(struct.pack("<II", len(head), len(payload)) + head + payload)


@pytest.mark.parametrize(
    ("arrays", "payload", "message"),
    [
        ([["|O", [1]]], b"\0" * 8, "unsupported array"),
        ([["<c16", [1]]], b"\0" * 16, "unsupported array"),
        ([["<f4", [-1]]], b"", "unsupported array"),
        ([["<f8", [4]]], b"\0" * 16, "past the end"),
    ],
)
def test_a_frame_with_a_bad_array_is_refused(arrays, payload, message):
    with pytest.raises(wire.WireError, match=message):
        wire.decode(frame_with({"arrays": arrays}, payload))


def test_a_frame_whose_length_disagrees_with_its_prefix_is_refused():
    frame = bytes(frame_with({"arrays": []}, b""))
    with pytest.raises(wire.WireError, match="does not match"):
        wire.decode(memoryview(frame + b"extra"))
