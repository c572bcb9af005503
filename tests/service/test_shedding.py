"""Admission at the front door: a bounded count of inference requests in flight, refusals in the
HTTP parser (uvicorn's protocol fed real request bytes) and in the ASGI guard, and no count lost."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
from uvicorn.config import Config
from uvicorn.server import ServerState

from service.shedding import Admission, RefusingHttpToolsProtocol, ShedWhenFull, arrival

BODY = orjson.dumps({"instances": [[0.0] * 784]})


def request(path: str, body: bytes = BODY, extra: str = "") -> bytes:
    head = f"POST {path} HTTP/1.1\r\nhost: test\r\ncontent-type: application/json\r\n"
    return (head + f"content-length: {len(body)}\r\n{extra}\r\n").encode() + body


class Transport(asyncio.Transport):
    """What the protocol writes, and whether it closed the connection."""

    def __init__(self) -> None:
        super().__init__()
        self.written = b""
        self.closed = False

    def write(self, data: Any) -> None:
        self.written += bytes(data)

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 40000)}.get(name, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


class App:
    """An inference app that answers 200 and records the paths it was called for, and when each
    request arrived as the routes see it."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        self.arrivals: list[float | None] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.paths.append(scope["path"])
        self.arrivals.append(arrival(scope))
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})


async def exchange(admission: Admission, app: App, data: bytes) -> Transport:
    """Feed `data` to a fresh connection of the refusing protocol and let its tasks finish."""
    config = Config(ShedWhenFull(app, admission), log_config=None, proxy_headers=False)
    protocol_class = RefusingHttpToolsProtocol.admitting(admission)
    state = ServerState()
    state.default_headers = [(b"date", b"Fri, 27 Nov 2026 23:59:59 GMT")]  # uvicorn's server sets it
    protocol = protocol_class(config=config, server_state=state, app_state={})
    transport = Transport()
    protocol.connection_made(transport)
    protocol.data_received(data)
    for _ in range(20):
        await asyncio.sleep(0)
    protocol._unset_keepalive_if_required()
    return transport


def responses(written: bytes) -> list[tuple[int, dict[str, str], bytes]]:
    """Status, headers and body of each HTTP/1.1 response in `written`."""
    answers = []
    while written:
        head, _, rest = written.partition(b"\r\n\r\n")
        status_line, *lines = head.decode().split("\r\n")
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
        length = int(headers["content-length"])
        answers.append((int(status_line.split()[1]), headers, rest[:length]))
        written = rest[length:]
    return answers


def test_when_full_the_parser_answers_503_with_retry_after_and_the_app_never_runs():
    admission, app = Admission(limit=1), App()
    admission.in_flight = 1
    data = request("/v1/predict") + request("/v1/models/mnist-mlp/uncertainty?samples=5")
    transport = asyncio.run(exchange(admission, app, data))
    answers = responses(transport.written)
    assert [status for status, _, _ in answers] == [503, 503]  # both, in order, on one connection
    for _, headers, body in answers:
        assert headers["retry-after"] == "1" and headers["date"].endswith("GMT")
        assert orjson.loads(body)["error"]["code"] == "unavailable"
    assert app.paths == [] and not transport.closed and admission.in_flight == 1


def test_a_refused_client_that_asked_to_close_is_closed():
    admission, app = Admission(limit=0), App()
    transport = asyncio.run(exchange(admission, app, request("/v1/predict", extra="connection: close\r\n")))
    [(status, headers, _)] = responses(transport.written)
    assert status == 503 and headers["connection"] == "close" and transport.closed


def test_a_refused_client_waiting_for_100_continue_is_answered_before_its_body():
    admission, app = Admission(limit=0), App()
    head = request("/v1/predict", extra="expect: 100-continue\r\n")[: -len(BODY)]  # no body sent yet
    transport = asyncio.run(exchange(admission, app, head))
    [(status, headers, _)] = responses(transport.written)
    assert status == 503 and headers["retry-after"] == "1" and transport.closed


def test_admitted_requests_are_counted_until_answered_and_others_pass_uncounted():
    admission, app = Admission(limit=1), App()
    data = request("/v1/predict") + request("/v1/predict") + request("/v1/models")
    transport = asyncio.run(exchange(admission, app, data))
    # one at a time on a connection: each admitted request left the count before the next came
    assert [status for status, _, _ in responses(transport.written)] == [200, 200, 200]
    assert app.paths == ["/v1/predict", "/v1/predict", "/v1/models"]
    assert admission.in_flight == 0


def test_admitted_inference_requests_carry_their_arrival_for_the_queue_wait():
    admission, app = Admission(limit=2), App()
    before = time.monotonic()
    asyncio.run(exchange(admission, app, request("/v1/predict") + request("/v1/models")))
    stamped, unstamped = app.arrivals
    assert stamped is not None and before <= stamped <= time.monotonic()
    assert unstamped is None  # not an inference request: nothing waits for a batch


def test_not_inference_routes_pass_even_when_full():
    admission, app = Admission(limit=0), App()
    transport = asyncio.run(exchange(admission, app, request("/v1/models/mnist-mlp")))
    assert [status for status, _, _ in responses(transport.written)] == [200]


def test_the_asgi_guard_counts_what_no_protocol_admitted_and_refuses_past_the_limit(client):
    admission = client.app.state.admission
    assert client.post("/v1/predict", json={"instances": [[0.0] * 784]}).status_code == 200
    assert client.post("/v1/predict", json={"instances": [[2.0] * 784]}).status_code == 422
    malformed = client.post("/v1/uncertainty", content=b"{", headers={"content-type": "application/json"})
    assert malformed.status_code == 400
    assert admission.in_flight == 0  # answered, refused for bad input or not: each left the count
    admission.in_flight = admission.limit
    try:
        refused = client.post("/v1/predict", json={"instances": [[0.0] * 784]})
    finally:
        admission.in_flight = 0
    assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
