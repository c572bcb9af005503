"""Several worker processes (DROPSERVE_WORKERS=2): connections opened at once are spread over the
workers; /metrics adds up every worker's values, whichever worker answers the scrape."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from models.artifact import read_manifest
from service.draining import QUIET_S, SPREAD_S, Drain
from service.workers import listening_socket
from tests.server import ESTABLISHED, running_server, sockets, sockets_held, wait_for_workers

REQUESTS = 40
CONNECTIONS = 32


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads the connection table from /proc")
def test_connections_opened_at_once_are_spread_over_the_workers(repository: Path, tmp_path: Path):
    # A burst of keep-alive connections, as a load balancer's pool or a benchmark opens them, made
    # exact: the kernel completes every handshake while the workers are stopped, then one worker
    # runs alone for a while. With one shared listening socket it would accept every pending
    # connection; with a socket per worker the kernel has already spread them over their queues.
    with running_server(repository, tmp_path / "server.log", workers="2", access_log="false") as server:
        host, port = server.url.removeprefix("http://").rsplit(":", 1)
        first, second = sorted(workers := wait_for_workers(server))
        for pid in workers:
            os.kill(pid, signal.SIGSTOP)
        try:
            address = (host, int(port))
            connections = [socket.create_connection(address, timeout=30) for _ in range(CONNECTIONS)]
            os.kill(first, signal.SIGCONT)
            time.sleep(1.0)
        finally:
            for pid in workers:
                os.kill(pid, signal.SIGCONT)
        try:
            for connection in connections:  # each answered, and kept open
                connection.sendall(b"GET /healthz HTTP/1.1\r\nHost: dropserve\r\n\r\n")
                assert connection.recv(65536).startswith(b"HTTP/1.1 200")
            established = sockets(int(port), ESTABLISHED)
            held = {pid: sockets_held(pid, established) for pid in (first, second)}
        finally:
            for connection in connections:
                connection.close()
    assert sum(held.values()) == CONNECTIONS, held
    # Hashed over 2 sockets, fewer than 4 of 32 land on one about 3 times in a million.
    assert min(held.values()) >= 4, held


def samples(url: str) -> dict[str, dict[tuple, float]]:
    found: dict[str, dict[tuple, float]] = {}
    text = httpx.get(f"{url}/metrics", timeout=10).text  # a new connection: any worker may answer
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return found


def test_metrics_add_up_over_workers(repository: Path, tmp_path: Path):
    with running_server(repository, tmp_path / "server.log", workers="2", access_log="false") as server:
        for _ in range(REQUESTS):  # each on a new connection, so both workers take some
            response = httpx.post(
                f"{server.url}/v1/uncertainty?samples=10", json={"instances": [[0.5] * 784]}
            )
            assert response.status_code == 200
        scrapes = [samples(server.url) for _ in range(6)]
        folder = re.search(r"values kept in (\S+)", server.log_text())
        assert folder, server.log_text()
        writers = {path.stem.rsplit("_", 1)[-1] for path in Path(folder[1]).glob("counter_*.db")}
    assert len(writers) == 2, "both workers should have answered some requests"

    route = (("method", "POST"), ("model", "mnist-mlp"), ("route", "/v1/uncertainty"), ("status", "200"))
    sha256 = read_manifest(repository / "mnist-mlp" / "1").weights_sha256
    info = (("model", "mnist-mlp"), ("sha256", sha256), ("version", "1"))
    for scrape in scrapes:
        assert scrape["dropserve_requests_total"][route] == REQUESTS
        assert scrape["dropserve_mc_samples_count"][(("model", "mnist-mlp"),)] == REQUESTS
        assert scrape["dropserve_model_info"] == {info: 1.0}  # livemax: one series, not one per worker
        assert scrape["dropserve_requests_in_flight"][()] == 1  # the scrape, summed over live workers
    assert not Path(folder[1]).exists(), "python -m service removes its metrics folder at exit"


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads the connection table from /proc")
def test_a_killed_worker_s_requests_in_flight_leave_metrics(repository: Path, tmp_path: Path):
    # Requests in flight are a live gauge: each worker's value counts while it lives. One killed
    # with -9 cannot close its metrics, so the supervisor must drop its values for it.
    with running_server(repository, tmp_path / "server.log", workers="2", access_log="false") as server:
        host, port = server.url.removeprefix("http://").rsplit(":", 1)
        workers = wait_for_workers(server)
        deadline = time.monotonic() + 60
        uploads = [socket.create_connection((host, int(port)), timeout=10) for _ in range(16)]
        try:
            for upload in uploads:  # in flight until its body arrives: it never does
                upload.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
            while samples(server.url)["dropserve_requests_in_flight"][()] != 17:  # and the scrape
                assert time.monotonic() < deadline, "the uploads are not all in flight"
                time.sleep(0.2)
            established = sockets(int(port), ESTABLISHED)
            victim = max(workers, key=lambda pid: sockets_held(pid, established))
            held = sockets_held(victim, established)
            os.kill(victim, signal.SIGKILL)
            wait_for_workers(server, besides=frozenset({victim}))  # the supervisor's replacement
        finally:
            for upload in uploads:  # the survivor's uploads end (400: the client left)
                upload.close()
        while (in_flight := samples(server.url)["dropserve_requests_in_flight"][()]) != 1:
            assert time.monotonic() < deadline + 30, f"{in_flight} in flight; the killed worker held {held}"
            time.sleep(0.2)


def test_workers_stop_when_their_supervisor_is_killed(repository: Path, tmp_path: Path):
    # Left alone they would serve on, unsupervised, and hold the port against the next server.
    with running_server(repository, tmp_path / "server.log", workers="2") as server:
        assert server.process is not None
        workers = wait_for_workers(server)
        host, port = server.url.removeprefix("http://").rsplit(":", 1)
        server.process.kill()
        server.process.wait()
        deadline = time.monotonic() + 15
        while alive := [pid for pid in workers if Path(f"/proc/{pid}").exists() and not zombie(pid)]:
            assert time.monotonic() < deadline, f"workers {alive} still run without their supervisor"
            time.sleep(0.2)
        listening_socket(host, int(port), shared=False).close()  # the port is free for the next server
        assert server.log_text().count("is gone; worker") == 2


def zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return False


@pytest.mark.parametrize("second_workers", ["1", "2"])
def test_a_second_server_on_a_taken_port_says_so_and_exits(
    repository: Path, tmp_path: Path, second_workers: str
):
    # The workers' sockets share the port with each other (SO_REUSEPORT); a second server started
    # on it by mistake must not join them and take half their connections.
    with running_server(repository, tmp_path / "server.log", workers="2") as server:
        port = server.url.rsplit(":", 1)[1]
        env = {key: value for key, value in os.environ.items() if not key.startswith("DROPSERVE_")}
        env.update(
            DROPSERVE_MODEL_REPOSITORY=str(repository), DROPSERVE_PORT=port, DROPSERVE_WORKERS=second_workers
        )
        second = subprocess.run(
            [sys.executable, "-m", "service"], env=env, capture_output=True, text=True, timeout=60
        )
        assert httpx.get(f"{server.url}/healthz").status_code == 200
    assert second.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in second.stderr and "in use" in second.stderr


def test_a_stop_signal_drains_before_it_reaches_the_installed_handler():
    # The installed handler stands for uvicorn's, whose shutdown closes idle connections.
    heard: list[float] = []
    sock = listening_socket("127.0.0.1", 0, shared=False)
    sock.listen()
    port = sock.getsockname()[1]
    previous = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)}

    async def stop() -> None:
        asyncio.get_running_loop().add_reader(sock.fileno(), lambda: None)  # as asyncio's server does
        signal.signal(signal.SIGTERM, lambda signum, frame: heard.append(time.perf_counter()))
        drain = Drain([sock])
        drain.install()
        signal.raise_signal(signal.SIGTERM)
        await asyncio.sleep(0.02)
        with pytest.raises(ConnectionRefusedError):  # refused before anything is sent
            socket.create_connection(("127.0.0.1", port), timeout=2)
        assert not drain.stopping.is_set()  # not yet: the other workers are closing their sockets
        await asyncio.sleep(SPREAD_S)
        assert drain.stopping.is_set() and not heard  # answers say close from now on
        drain.last_request = time.perf_counter()  # a request starts: the quiet period starts again
        while not heard:
            await asyncio.sleep(0.02)
        assert heard[0] - drain.last_request >= QUIET_S
        signal.raise_signal(signal.SIGTERM)  # a second signal goes straight on
        assert len(heard) == 2

    try:
        asyncio.run(stop())
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        sock.close()
