"""The request path of a real server process: slow uploads, slow clients, big decodes, big answers."""

from __future__ import annotations

import base64
import io
import json
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import publish_tiny
from tests.server import running_server

BODY = json.dumps({"instances": [[0.0] * 784]}).encode()
JSON = {"content-type": "application/json"}


def tiny_server(factory: pytest.TempPathFactory, name: str, **settings: str) -> Iterator[str]:
    """`python -m service` serving a tiny model with `settings`; yields its URL."""
    repository = factory.mktemp(f"{name}-artifacts")
    publish_tiny(repository)
    log = factory.mktemp(f"{name}-logs") / "server.log"
    with running_server(repository, log, log_level="warning", **settings) as running:
        yield running.url


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A small engine queue and a short body timeout."""
    yield from tiny_server(
        tmp_path_factory, "engine", queue_max="8", body_timeout_s="3", mc_samples_max="100000000"
    )


def connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=10)


def head(path: str, length: int) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()


def read_response(sock: socket.socket) -> tuple[int, bytes]:
    """(status, body) of one response with a Content-Length."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    header, _, body = data.partition(b"\r\n\r\n")
    lines = header.decode("latin-1").split("\r\n")
    length = next(int(line.split(":")[1]) for line in lines if line.lower().startswith("content-length"))
    while len(body) < length:
        body += sock.recv(65536)
    return int(lines[0].split()[1]), body


def test_a_body_that_arrives_after_its_headers_is_answered(server):
    with connect(server) as sock:
        sock.sendall(head("/v1/predict", len(BODY)))
        time.sleep(0.6)  # more than the 250 ms queue-wait bound
        sock.sendall(BODY)
        status, body = read_response(sock)
    assert status == 200, body
    assert len(json.loads(body)["predictions"]) == 1


@pytest.mark.parametrize("path", ["/v1/predict", "/v2/models/mnist-mlp/infer"])
def test_a_body_that_never_completes_gets_408_with_the_envelope(server, path):
    with connect(server) as sock:
        sock.sendall(head(path, len(BODY)) + BODY[:10])
        status, body = read_response(sock)  # after DROPSERVE_BODY_TIMEOUT_S
    assert status == 408
    error = json.loads(body)["error"]  # the Open Inference Protocol's envelope is the message alone
    assert error["code"] == "request_timeout" if path.startswith("/v1") else "did not arrive" in error


def test_slow_clients_do_not_starve_fast_ones(server):
    # 160 clients trickle their bodies a byte at a time: 20 times the engine's queue bound (8).
    trickling = [connect(server) for _ in range(160)]
    try:
        for sock in trickling:
            sock.sendall(head("/v1/predict", len(BODY)) + BODY[:1])
        statuses = []
        with httpx.Client(base_url=server, timeout=10) as client:
            for i in range(1, 21):
                statuses.append(client.post("/v1/predict", content=BODY, headers=JSON).status_code)
                for sock in trickling:  # one more byte each: their bodies stay incomplete
                    sock.sendall(BODY[i : i + 1])
        assert statuses == [200] * 20
        assert httpx.get(f"{server}/healthz", timeout=5).status_code == 200
    finally:
        for sock in trickling:
            sock.close()


@pytest.fixture(scope="module")
def budget_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """At most 25 MB of request and response bodies held at once; 4 s for a body, or a slice of an
    answer, to go through."""
    limits = {"max_body_bytes": "12500000", "max_buffered_bytes": "25000000", "body_timeout_s": "4"}
    yield from tiny_server(tmp_path_factory, "budget", **limits)


def test_request_bodies_in_progress_share_a_memory_bound(budget_server):
    batch = json.dumps({"instances": [[0.5] * 784] * 200}).encode()  # 0.78 MB
    assert 700_000 < len(batch) < 800_000
    padded = batch + b" " * (12_499_500 - len(batch))  # JSON allows trailing whitespace
    holding = [connect(budget_server) for _ in range(2)]
    try:
        for sock in holding:  # all but the last byte of two bodies: 24,998,998 of the 25 MB held
            sock.sendall(head("/v1/predict", len(padded)) + padded[:-1])
        time.sleep(1)
        with httpx.Client(base_url=budget_server, timeout=10) as client:
            # a small body is never refused for the bound, though with its 4 kB the total is past it
            assert client.post("/v1/predict", content=BODY, headers=JSON).status_code == 200
            refused = client.post("/v1/predict", content=batch, headers=JSON)
            assert refused.status_code == 503
            assert refused.headers["retry-after"] == "1"
            assert refused.json()["error"]["code"] == "unavailable"
            assert "25000000 bytes of request and response bodies" in refused.json()["error"]["message"]
            tensor = {"name": "input", "datatype": "FP32", "shape": [200, 784], "data": [0.5] * 200 * 784}
            infer = client.post("/v2/models/mnist-mlp/infer", json={"inputs": [tensor]})
            assert infer.status_code == 503, infer.text  # in the Open Inference Protocol's error object
            assert "bodies" in infer.json()["error"] and infer.headers["retry-after"] == "1"
            for sock in holding:
                sock.sendall(padded[-1:])
                status, _ = read_response(sock)
                assert status == 200
            # answered, the two release their bytes: the refused body fits now, three times over
            for _ in range(3):
                assert client.post("/v1/predict", content=batch, headers=JSON).status_code == 200
    finally:
        for sock in holding:
            sock.close()


def test_an_answer_its_client_does_not_read_holds_its_share_of_the_bound(budget_server):
    # 4 instances x 10,000 sampled probabilities of 10 classes: an answer of about 8 MB, which takes
    # 400,000 x 48 = 19.2 MB of the 25 MB while it is computed and built
    body = json.dumps({"instances": [[0.5] * 784] * 4, "samples": 10_000, "return_samples": True}).encode()
    with httpx.Client(base_url=budget_server, timeout=30) as client:
        size = len(client.post("/v1/uncertainty", content=body, headers=JSON).content)
        assert 6_000_000 < size < 10_000_000
        reader = socket.socket()  # asks for such an answer and reads none of it
        try:
            reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            host, port = budget_server.removeprefix("http://").split(":")
            reader.connect((host, int(port)))
            reader.sendall(head("/v1/uncertainty", len(body)) + body)
            # the part of its answer the kernel did not take stays counted: no room for another
            deadline = time.monotonic() + 15
            while (another := client.post("/v1/uncertainty", content=body, headers=JSON)).status_code == 200:
                assert time.monotonic() < deadline, "an unread answer should hold its share of the bound"
                time.sleep(0.2)
            assert another.status_code == 503 and another.headers["retry-after"] == "1"
            assert client.post("/v1/predict", content=BODY, headers=JSON).status_code == 200
        finally:
            reader.close()
        # its client gone, the answer no longer holds anything
        deadline = time.monotonic() + 15
        while client.post("/v1/uncertainty", content=body, headers=JSON).status_code != 200:
            assert time.monotonic() < deadline, "an answer whose client left should be given back"
            time.sleep(0.2)


def test_a_client_that_stops_reading_its_answer_is_given_up_on(budget_server):
    body = json.dumps({"instances": [[0.5] * 784] * 4, "samples": 10_000, "return_samples": True}).encode()
    with socket.socket() as reader, httpx.Client(base_url=budget_server, timeout=30) as client:
        reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        host, port = budget_server.removeprefix("http://").split(":")
        reader.connect((host, int(port)))
        reader.sendall(head("/v1/uncertainty", len(body)) + body)
        deadline = time.monotonic() + 15
        while client.post("/v1/uncertainty", content=body, headers=JSON).status_code != 503:
            assert time.monotonic() < deadline, "the unread answer should hold its share first"
            time.sleep(0.1)
        # still connected, reading nothing: after DROPSERVE_BODY_TIMEOUT_S (4 s) it holds nothing
        started = time.monotonic()
        while client.post("/v1/uncertainty", content=body, headers=JSON).status_code != 200:
            assert time.monotonic() < started + 15, "a client that reads nothing should be given up on"
            time.sleep(0.2)
        assert time.monotonic() - started > 2  # not before its time


def test_an_answer_larger_than_the_bound_can_hold_is_413_saying_what_fits(budget_server):
    # 10 instances x 10,000 samples x 10 classes = 1,000,000 values: 48 MB to build, over the 25 MB
    body = {"instances": [[0.5] * 784] * 10, "samples": 10_000, "return_samples": True}
    response = httpx.post(f"{budget_server}/v1/uncertainty", json=body, timeout=30)
    assert response.status_code == 413
    assert (
        "over the 520833 this server returns; ask for at most 5208 samples"
        in response.json()["error"]["message"]
    )


def big_png(side: int) -> bytes:
    """A side x side grayscale PNG: black with a white bar, compressing to a few kB."""
    pixels = np.zeros((side, side), dtype=np.uint8)
    pixels[side // 4 : 3 * side // 4, side // 2 - side // 20 : side // 2 + side // 20] = 255
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def test_health_answers_quickly_while_the_largest_images_decode(server):
    # 32 images at the pixel bound (4000 x 4000 = 16 M pixels each), in one JSON body.
    image = base64.b64encode(big_png(4000)).decode()
    body = json.dumps({"instances": [{"b64": image}] * 32}).encode()
    outcome: dict[str, object] = {}

    def upload() -> None:
        started = time.monotonic()
        response = httpx.post(f"{server}/v1/predict", content=body, headers=JSON, timeout=120)
        outcome["status"], outcome["seconds"] = response.status_code, time.monotonic() - started

    uploader = threading.Thread(target=upload)
    uploader.start()
    latencies = []
    with httpx.Client(base_url=server, timeout=10) as client:
        while uploader.is_alive():
            started = time.monotonic()
            assert client.get("/healthz").status_code == 200
            latencies.append(time.monotonic() - started)
            time.sleep(0.02)
    uploader.join()
    assert outcome["status"] == 200
    assert len(latencies) >= 10, f"the decode took only {outcome['seconds']:.2f} s: not a load"
    assert max(latencies) < 0.1, f"slowest /healthz {max(latencies) * 1000:.0f} ms"


def metric(server: str, name: str, **labels: str) -> float:
    text = httpx.get(f"{server}/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and labels.items() <= sample.labels.items():
                return sample.value
    return 0.0


@pytest.mark.parametrize("path", ["/v1/uncertainty", "/v2/models/mnist-mlp/infer"])
def test_a_client_that_leaves_stops_its_computation(server, path):
    # 16 inputs x 20 million passes: thousands of steps, tens of seconds of compute.
    images = [[0.5] * 784] * 16
    if path.startswith("/v1"):
        body = json.dumps({"instances": images, "samples": 20_000_000, "seed": 1}).encode()
    else:
        tensor = {"name": "input", "datatype": "FP32", "shape": [16, 784], "data": images}
        body = json.dumps({"inputs": [tensor], "parameters": {"mc_samples": 20_000_000}}).encode()
    route = path.replace("mnist-mlp", "{name}")  # the route template, as metrics label it
    left_before = metric(server, "dropserve_requests_total", route=route, status="499", model="mnist-mlp")
    with connect(server) as sock:
        sock.sendall(head(path, len(body)) + body)
        time.sleep(0.5)
        computing = metric(server, "dropserve_round_jobs_count")
        time.sleep(0.5)
        assert metric(server, "dropserve_round_jobs_count") > computing, "the job should be computing"
    # The client has gone: its request is recorded as 499 (under the model that was answering it,
    # the default route's too), and the engine runs no more rounds.
    deadline = time.monotonic() + 5
    while (
        metric(server, "dropserve_requests_total", route=route, status="499", model="mnist-mlp")
        == left_before
    ):
        assert time.monotonic() < deadline, "the request was not stopped when its client left"
        time.sleep(0.1)
    rounds = metric(server, "dropserve_round_jobs_count")
    time.sleep(0.5)
    assert metric(server, "dropserve_round_jobs_count") == rounds


def test_the_server_still_serves_after_all_of_that(server):
    response = httpx.post(f"{server}/v1/uncertainty", content=BODY, headers=JSON, timeout=10)
    assert response.status_code == 200
    assert response.json()["samples"] == 100
