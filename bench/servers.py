"""The servers `make bench` loads: how one is started alone on 127.0.0.1, made ready and stopped."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from bench.wrk import Load


@dataclass(frozen=True)
class Server:
    name: str  # "old", "new", "floor" or "litserve": what the tables call it
    port: int  # on 127.0.0.1; `command` and `env` make the server listen there
    command: list[str]
    cwd: Path
    env: dict[str, str]  # on top of the bench's own environment, less its DROPSERVE_* variables
    ready_path: str
    loads: tuple[Load, ...]


@contextlib.contextmanager
def serving(server: Server, log: Path) -> Iterator[None]:
    """`server` running and ready, its output appended to `log`; stopped on exit."""
    with log.open("ab") as output:
        process = _start(server, output)
        try:
            _wait_ready(server.port, server.ready_path, process, log)
            yield
        finally:
            _stop(process)


def _start(server: Server, output: IO[bytes]) -> subprocess.Popen[bytes]:
    """In its own process group, so that _stop() ends its workers too (both engines and LitServe
    run helper processes). Both engines run on their defaults: no DROPSERVE_* variable of ours
    reaches them but what `server.env` names."""
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("DROPSERVE_")}
    return subprocess.Popen(
        server.command,
        cwd=server.cwd,
        env={**inherited, **server.env},
        stdout=output,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _stop(process: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    except ProcessLookupError:
        pass
    with contextlib.suppress(ProcessLookupError):  # workers that outlived their parent
        os.killpg(process.pid, signal.SIGKILL)


def _wait_ready(
    port: int, path: str, process: subprocess.Popen[bytes], log: Path, timeout_s: float = 90
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode} before it was ready:\n{_tail(log)}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=1) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"server not ready on port {port} after {timeout_s} s:\n{_tail(log)}")


def _tail(log: Path, lines: int = 30) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
