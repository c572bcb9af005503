"""A real `python -m service` in its own process, for tests that need real HTTP: several
workers, reloads under load, the client and the command line."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    def __init__(self, url: str, log: Path, process: subprocess.Popen | None = None) -> None:
        self.url = url
        self.log = log  # the server's stderr
        self.process = process  # `python -m service`, for tests that signal it

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


@contextmanager
def running_server(repository: Path, log: Path, ready: str = "/readyz", **settings: str) -> Iterator[Server]:
    """Serve `repository` on a free port with DROPSERVE_<NAME> settings; yields once `ready`
    answers 200 (use /healthz for a server with no model)."""
    port = free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("DROPSERVE_")}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    env.update({f"DROPSERVE_{key.upper()}": value for key, value in settings.items()})
    env.update(DROPSERVE_MODEL_REPOSITORY=str(repository), DROPSERVE_PORT=str(port))
    url = f"http://127.0.0.1:{port}"
    with log.open("wb") as output:
        process = subprocess.Popen([sys.executable, "-m", "service"], env=env, stderr=output, stdout=output)
    server = Server(url, log, process)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}{ready}", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None:
                raise RuntimeError(f"the server exited during start-up:\n{server.log_text()[-3000:]}")
            time.sleep(0.2)
        else:
            raise RuntimeError(f"{url}{ready} did not answer 200 within 90 s:\n{server.log_text()[-3000:]}")
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def worker_pids(parent: int) -> set[int]:
    """The worker processes of `python -m service` (service/workers.py): the children of `parent`
    started by multiprocessing's spawn (its resource tracker is a child too, and is not a worker)."""
    workers = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == parent and b"spawn_main" in command:
            workers.add(int(entry.name))
    return workers


def wait_for_workers(server: Server, count: int = 2, besides: frozenset[int] = frozenset()) -> set[int]:
    """The pids of `count` workers of `server` other than `besides` (a killed one, say), once each
    listens on the server's port. A worker binds its socket when it starts and listens only once
    its app has loaded the models, so a worker that runs may not serve yet: the server is ready as
    soon as one of them does."""
    assert server.process is not None
    port = int(server.url.rsplit(":", 1)[1])
    deadline = time.monotonic() + 60
    while True:
        listening = sockets(port, LISTEN)
        workers = {pid for pid in worker_pids(server.process.pid) - besides if sockets_held(pid, listening)}
        if len(workers) >= count:
            return workers
        assert time.monotonic() < deadline, f"{count} workers did not start listening"
        time.sleep(0.2)


ESTABLISHED, LISTEN = "01", "0A"  # TCP states as /proc/net/tcp writes them


def sockets(port: int, state: str) -> set[int]:
    """Socket inodes of the TCP sockets whose local port is `port`, in `state` (ESTABLISHED, LISTEN)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == state:
                inodes.add(int(fields[9]))
    return inodes


def sockets_held(pid: int, inodes: set[int]) -> int:
    """How many of the sockets `inodes` process `pid` holds open."""
    held = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = fd.readlink().name
        except OSError:  # closed meanwhile
            continue
        held += target.startswith("socket:[") and int(target[8:-1]) in inodes
    return held
