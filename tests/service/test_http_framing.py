"""HTTP framing a client can get wrong, sent as raw bytes to a real `python -m service`: who answers
(uvicorn's parser, in plain text, or the app, with the envelope) and with what status. Never a 5xx,
never a hang. What uvicorn answers itself cannot carry the envelope without subclassing its
protocol classes (STYLE 13); docs/robustness.md lists these cases and the nginx bounds in front."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import publish_tiny
from tests.server import Server, running_server

JSON_POST = b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("framing")
    publish_tiny(root / "artifacts")
    with running_server(
        root / "artifacts", root / "server.log", body_timeout_s="1", max_body_bytes="100000", keep_alive_s="2"
    ) as running:
        yield running


def connect(server: Server, timeout: float = 10.0) -> socket.socket:
    host, port = server.url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=timeout)


def exchange(server: Server, raw: bytes, timeout: float = 10.0) -> tuple[int, dict[str, str], bytes]:
    """Send `raw` on a new connection; (status, headers, body) of the first answer."""
    with connect(server, timeout) as connection:
        return send(connection, raw)


def send(connection: socket.socket, raw: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send `raw` on `connection`; (status, headers, body) of its answer."""
    connection.sendall(raw)
    data = b""
    while b"\r\n\r\n" not in data and (chunk := connection.recv(65536)):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
    while len(body) < int(headers.get("content-length", 0)) and (chunk := connection.recv(65536)):
        body += chunk
    return int(status_line.split()[1]), headers, body


PARSER_ERRORS = {
    "64 KB URL": b"GET /healthz?q=" + b"a" * 65536 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    "bad chunk framing": JSON_POST + b"Transfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
    "negative Content-Length": JSON_POST + b"Content-Length: -5\r\n\r\n",
    "Content-Length past 2**64": JSON_POST + b"Content-Length: 99999999999999999999999\r\n\r\n",
    "Content-Length and chunked": JSON_POST
    + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "space in a header name": b"GET /healthz HTTP/1.1\r\nHost: x\r\nBad Header: 1\r\n\r\n",
    "not HTTP (a TLS hello)": b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03 hello\r\n\r\n",
}


@pytest.mark.parametrize("raw", PARSER_ERRORS.values(), ids=PARSER_ERRORS.keys())
def test_parser_errors_get_uvicorns_plain_400_and_a_closed_connection(server: Server, raw: bytes):
    status, headers, body = exchange(server, raw)
    assert status == 400
    assert headers["content-type"].startswith("text/plain") and headers["connection"] == "close"
    assert body == b"Invalid HTTP request received."


def test_the_app_answers_every_well_framed_request_with_the_envelope(server: Server):
    short_body = JSON_POST + b"Content-Length: 100\r\nConnection: close\r\n\r\n" + b'{"inst'
    # Kept alive, as clients do: uvicorn reads and drops the rest of a refused body. (With
    # `Connection: close` it closes with the rest unread, and the kernel's reset can beat the 413.)
    chunked_over_the_limit = (
        JSON_POST + b"Transfer-Encoding: chunked\r\n\r\n"
        + (b"10000\r\n" + b" " * 0x10000 + b"\r\n") * 2 + b"0\r\n\r\n"
    )  # fmt: skip
    declared_over_the_limit = JSON_POST + b"Content-Length: 100001\r\nConnection: close\r\n\r\n"
    for raw, expected in [(short_body, 408), (chunked_over_the_limit, 413), (declared_over_the_limit, 413)]:
        status, headers, body = exchange(server, raw)
        assert status == expected, body
        assert headers["content-type"] == "application/json"
        assert json.loads(body)["error"]["request_id"] == headers["x-request-id"]


@pytest.mark.parametrize(
    "raw",
    [
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (1 << 20) + b"\r\nConnection: close\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n"
        + b"".join(b"X-%d: a\r\n" % i for i in range(10_000))
        + b"Connection: close\r\n\r\n",
    ],
    ids=["a 1 MB header", "10,000 headers"],
)
def test_large_headers_reach_the_app_unbounded_behind_no_proxy(server: Server, raw: bytes):
    # uvicorn's httptools parser bounds neither: nginx does in deploy (large_client_header_buffers).
    status, _, _ = exchange(server, raw)
    assert status == 200


def test_an_idle_keep_alive_connection_closes_after_keep_alive_s_not_before(server: Server):
    # DROPSERVE_KEEP_ALIVE_S is 2 here (75 by default: longer than proxies and clients keep one,
    # so that they close it first; tests/deploy checks nginx's side).
    body = json.dumps({"instances": [[0.0] * 784]}).encode()
    predict = JSON_POST + b"Content-Length: %d\r\n\r\n" % len(body) + body
    with connect(server) as connection:
        assert send(connection, predict)[0] == 200
        time.sleep(1.0)
        assert send(connection, predict)[0] == 200  # the same connection, still open
        time.sleep(3.0)
        connection.settimeout(0.5)  # idle 3.5 s at most: uvicorn's own default (5 s) would not have closed it
        assert connection.recv(1) == b""  # closed by the server, idle past 2 s


def test_nothing_above_was_a_server_error(server: Server):
    log_text = Path(server.log).read_text()
    assert "Traceback" not in log_text and " 500 " not in log_text
