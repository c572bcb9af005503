"""The batcher's compute in a child process (service.worker), with its own interpreter lock.

In one process the inference thread shares the GIL with the event loop: every torch call hands it
back, and taking it again waits on the loop, which under load always wants it. An MC batch makes
about twenty such calls, so at 64 connections a 5 ms batch took 13-15 ms. Here the inference
thread only ships the batch's pixels and waits on a socket: a send and a receive per batch.
"""

from __future__ import annotations

import logging
import os
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

import service
from models.uncertainty import UncertaintySummary
from service import wire
from service.batching import Job
from service.errors import ApiError
from service.inference import batch_pixels, split_predictions, split_uncertainty
from service.settings import Settings

log = logging.getLogger(__name__)

START_TIMEOUT_S = 120.0
"""Longest the process may take to import torch and initialise its device."""

_STATISTICS = len(UncertaintySummary.__dataclass_fields__)
"""Arrays of an uncertainty reply before the optional passes: one per summary field, in order."""

_SOURCE_ROOT = str(Path(service.__file__).resolve().parent.parent)  # where `service` imports from


class InferenceError(RuntimeError):
    """A batch raised in the inference process; its requests get a 500."""


class InferenceProcess:
    """Runs batches in `python -m service.worker`, started with `start()` and again after a crash.

    Called from the batcher's inference thread; `keep_loaded` may come from another thread, so
    each exchange with the process holds a lock.
    """

    def __init__(self, settings: Settings) -> None:
        self._arguments = [
            f"--device={settings.device}",
            f"--torch-threads={settings.torch_threads}",
            f"--log-format={settings.log_format}",
            f"--log-level={settings.log_level}",
        ]
        # a batch can run no longer than its requests wait: a process silent for longer is stuck
        self._reply_timeout_s = settings.request_timeout_s + 30
        self._lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None
        self._sock: socket.socket | None = None
        self._paths: list[str] = []  # artifact folders the process keeps loaded

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def start(self) -> None:
        """Start the process and wait until it is ready (it imports torch: seconds)."""
        with self._lock:
            if self._sock is None:
                self._spawn()

    def stop(self) -> None:
        """End the process: it sees its socket close and exits."""
        with self._lock:
            self._end()

    def keep_loaded(self, paths: Iterable[Path]) -> list[str]:
        """Have the process load these artifact folders and drop any other; what it now holds."""
        with self._lock:
            self._paths = sorted(str(p) for p in paths)
            return self._keep() if self._sock is not None else []

    def __call__(self, jobs: list[Job]) -> list[Any]:
        """The batcher's compute: jobs share a key, so one model and one kind."""
        first = jobs[0]
        path = str(first.loaded.path)
        if first.samples is None:
            _, (probabilities,) = self._call({"op": "predict", "path": path}, [batch_pixels(jobs)])
            return split_predictions(jobs, probabilities)
        header = {
            "op": "uncertainty",
            "path": path,
            "samples": first.samples,
            "seeds": [job.seed for job in jobs],
            "rows": [job.rows for job in jobs],
            "return_samples": any(job.return_samples for job in jobs),
        }
        _, arrays = self._call(header, [batch_pixels(jobs)])
        summary = UncertaintySummary(*arrays[:_STATISTICS])
        return split_uncertainty(jobs, summary, arrays[_STATISTICS] if len(arrays) > _STATISTICS else None)

    def _call(self, header: dict[str, Any], arrays: Sequence[np.ndarray]) -> wire.Frame:
        with self._lock:
            if self._sock is None:  # the last one failed: start another
                self._spawn()
            try:
                reply = self._exchange(header, arrays)
            except (OSError, wire.WireError) as e:
                code = None if self._process is None else self._process.poll()
                log.error("the inference process failed (%s; exit code %s); starting a new one", e, code)
                self._end()
                raise ApiError(
                    503,
                    "the inference process stopped and is restarting; retry shortly",
                    headers={"Retry-After": "1"},
                ) from None
        if "error" in reply[0]:
            raise InferenceError(reply[0]["error"])
        return reply

    def _exchange(self, header: dict[str, Any], arrays: Sequence[np.ndarray]) -> wire.Frame:
        assert self._sock is not None
        self._sock.sendall(wire.encode(header, arrays))
        reply = wire.receive(self._sock)
        if reply is None:
            raise wire.WireError("the inference process closed its socket")
        return reply

    def _keep(self) -> list[str]:
        reply, _ = self._exchange({"op": "keep", "paths": self._paths}, [])
        if "error" in reply:
            raise InferenceError(reply["error"])
        return list(reply["loaded"])

    def _spawn(self) -> None:
        ours, theirs = socket.socketpair()
        path = os.pathsep.join(p for p in (_SOURCE_ROOT, os.environ.get("PYTHONPATH")) if p)
        command = [sys.executable, "-m", "service.worker", f"--socket-fd={theirs.fileno()}", *self._arguments]
        with theirs:
            process = subprocess.Popen(
                command,
                pass_fds=[theirs.fileno()],
                stdin=subprocess.DEVNULL,
                env={**os.environ, "PYTHONPATH": path},
            )
        try:
            ours.settimeout(START_TIMEOUT_S)
            hello = wire.receive(ours)
            if hello is None or not hello[0].get("ready"):
                raise wire.WireError("it closed its socket")
        except (OSError, wire.WireError) as e:
            ours.close()
            process.kill()
            process.wait()
            raise RuntimeError(
                f"the inference process did not start ({e}; exit code {process.returncode})"
            ) from e
        # Blocking with a receive timeout set in the kernel: a socket timeout in Python would wait
        # in poll() before each receive, and every wait releases the GIL, to be taken back later.
        ours.settimeout(None)
        seconds = int(self._reply_timeout_s)
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", seconds, 0))
        self._process, self._sock = process, ours
        log.info("inference process %s ready", process.pid)
        if self._paths:
            self._keep()

    def _end(self) -> None:
        sock, process, self._sock, self._process = self._sock, self._process, None, None
        if sock is not None:
            sock.close()
        if process is not None:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
