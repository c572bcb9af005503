"""Several worker processes, each listening on the port with a socket of its own (SO_REUSEPORT).

Why not uvicorn's `--workers`: it shares one listening socket between its workers, and asyncio's
accept loop takes every pending connection at once, so a burst of new connections (a load
balancer's pool, a benchmark's 64) tends to land on one worker while the others idle; which one
varies from burst to burst. With a socket per worker the kernel spreads connections over the
workers by their addresses (docs/performance.md). Each worker is uvicorn's own `Server`, and binds
its socket when it starts but listens only once its app has loaded the models, so no connection
waits on a worker that is still starting.

The supervisor (this process) starts the workers, replaces one that dies, and on SIGTERM or SIGINT
asks each to stop (uvicorn's graceful shutdown: every admitted request is answered) and waits.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import threading
import time
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from types import FrameType
from typing import Any

import uvicorn
from prometheus_client.multiprocess import mark_process_dead

from service import draining

log = logging.getLogger(__name__)

STARTUP_FAILURE = 3  # uvicorn's exit status when the app's start-up fails


def listening_socket(host: str, port: int, shared: bool = True) -> socket.socket:
    """A TCP socket bound to (host, port), with SO_REUSEPORT when `shared`, not yet listening:
    asyncio listens when uvicorn starts serving on it."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP named, not left 0: asyncio sets TCP_NODELAY on accepted connections only when the
    # socket says it is TCP (without it, Nagle held every keep-alive answer for ~40 ms).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if shared:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def claim_port(host: str, port: int) -> socket.socket | None:
    """(host, port) bound without SO_REUSEPORT, so refused even by another server's SO_REUSEPORT
    sockets; None, said in the log, when anything listens there."""
    try:
        return listening_socket(host, port, shared=False)
    except OSError as e:
        log.error("cannot listen on %s:%d: %s", host, port, e)
        return None


def serve_workers(workers: int, config: dict[str, Any], grace_s: float) -> int:
    """Run `workers` uvicorn servers of `config` (uvicorn.Config's keyword arguments) until
    SIGTERM or SIGINT; returns the exit status."""
    # Fail at once, in the supervisor, when anything listens on the port: the workers' own sockets
    # (SO_REUSEPORT) would otherwise join another server's and share its connections.
    probe = claim_port(config["host"], config["port"])
    if probe is None:
        return 1
    probe.close()
    context = multiprocessing.get_context("spawn")
    stopping = threading.Event()
    running: list[BaseProcess] = []
    signalled: set[int] = set()

    def terminate_all() -> None:
        for process in running:
            if process.pid is not None and process.pid not in signalled and process.exitcode is None:
                os.kill(process.pid, signal.SIGTERM)
                signalled.add(process.pid)

    def stop(signum: int, frame: FrameType | None) -> None:
        # Passed on at once, in the handler: until a worker hears it, it keeps taking requests.
        stopping.set()
        terminate_all()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, stop)

    def start() -> BaseProcess:
        process = context.Process(target=run_worker, args=(config, os.getpid()), name="dropserve-worker")
        process.start()
        log.info("Started worker process [%d]", process.pid)
        return process

    running.extend(start() for _ in range(workers))
    status = 0
    while not stopping.is_set():
        wait([p.sentinel for p in running], timeout=0.5)
        for process in [p for p in running if not p.is_alive()]:
            running.remove(process)
            forget_metrics(process)
            if stopping.is_set():
                break
            if process.exitcode == STARTUP_FAILURE:
                log.error("worker process [%d] failed to start; stopping", process.pid)
                stopping.set()
                status = STARTUP_FAILURE
                break
            # The same words as uvicorn's supervisor, so that logs read the same either way.
            log.warning(
                "Child process [%d] died (status %s); starting another", process.pid, process.exitcode
            )
            running.append(start())
    terminate_all()  # those started since the signal, or all after a failed start-up
    for process in running:
        process.join(grace_s + 5)
        if process.exitcode is None:
            log.error("worker process [%d] did not stop within its grace period; killing it", process.pid)
            process.kill()
            process.join()
    return status


def forget_metrics(process: BaseProcess) -> None:
    """A worker that ended without closing its metrics (kill -9, the OOM killer) must not count in
    /metrics any more: its live gauges (requests in flight, model versions held) leave the folder,
    as gunicorn's child_exit hook does for prometheus_client."""
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ and process.pid is not None:
        mark_process_dead(process.pid)


def run_worker(config: dict[str, Any], supervisor: int) -> None:
    """A worker process: one uvicorn server on a socket of its own. SIGTERM ends it with status 0
    once uvicorn's graceful shutdown is done (uvicorn raises the signal again for the handler it
    found: this one)."""
    signal.signal(signal.SIGTERM, exit_0)
    # Ctrl-C reaches the whole process group; the supervisor then asks each worker with SIGTERM.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    stop_when_orphaned(supervisor)
    serve(config, listening_socket(config["host"], config["port"]))


def stop_when_orphaned(supervisor: int, every_s: float = 1.0) -> None:
    """Stop this worker, as SIGTERM does (draining), once its supervisor is gone (kill -9, the OOM
    killer): else it would serve on unsupervised, holding the port against the next server.
    gunicorn's workers watch their parent the same way."""

    def watch() -> None:
        while os.getppid() == supervisor:
            time.sleep(every_s)
        log.warning("the supervisor [%d] is gone; worker [%d] stops", supervisor, os.getpid())
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="dropserve-supervisor-watch", daemon=True).start()


def serve(config: dict[str, Any], sock: socket.socket) -> None:
    """One uvicorn server of `config` on `sock`, a bound socket it listens on once the app has
    started; at SIGTERM the app's drain stops it taking connections (service/draining.py)."""
    draining.listening.append(sock)
    uvicorn.Server(uvicorn.Config(**config)).run(sockets=[sock])


def exit_0(signum: int, frame: FrameType | None) -> None:
    """SIGTERM is how a container is asked to stop: exit 0 once the drain is done. uvicorn serves
    with its own handler and, after its graceful shutdown, raises the signal again for the handler
    it found, this one (with the default one the process would die of it, status -15); before
    uvicorn takes over (start-up), it stops the process at once."""
    raise SystemExit(0)
