"""The overload run: wrk floods the new engine with predict requests on 512 connections while a
liveness probe, as an orchestrator sends it, asks GET /healthz on a fresh connection every 20 ms.
The flood should get only 200s and 503s with Retry-After; the probe every answer, quickly."""

from __future__ import annotations

import http.client
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from bench.servers import Server, serving
from bench.wrk import Load, wrk, wrk_command, wrk_result

FLOOD_CONNECTIONS = 512
PROBE_INTERVAL_S = 0.02
PROBE_TIMEOUT_S = 1.0  # a probe not answered by then counts as "no answer", at this latency


def overload(server: Server, load: Load, seconds: float, log: Path) -> dict[str, Any]:
    """`server` flooded with `load` for about `seconds`, its /healthz probed meanwhile."""
    port = server.port
    with serving(server, log):
        wrk(port, load, 64, 1.0)  # warm-up
        command, env = wrk_command(port, load, FLOOD_CONNECTIONS, seconds + 2)
        flood = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True)
        try:
            time.sleep(1.0)  # the flood is on before the probe starts
            health = probe_health(port, seconds)
            out, _ = flood.communicate(timeout=seconds + 30)
        finally:
            if flood.poll() is None:
                flood.kill()
                flood.wait()
    by_wrk = wrk_result(out, FLOOD_CONNECTIONS)
    print(
        f"overload c={FLOOD_CONNECTIONS}: {by_wrk['req_per_s']:.0f} answers/s, "
        f"statuses {by_wrk['statuses']}, socket errors {by_wrk['socket_errors']}; /healthz {health}",
        flush=True,
    )
    return {"wrk": by_wrk, "healthz": health}


def probe_health(port: int, seconds: float) -> dict[str, Any]:
    """GET /healthz every PROBE_INTERVAL_S for `seconds`: statuses and latency percentiles (ms)."""
    statuses: Counter[str] = Counter()
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        started = time.perf_counter()
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=PROBE_TIMEOUT_S)
        try:
            connection.request("GET", "/healthz")
            answer = connection.getresponse()
            answer.read()
            statuses[str(answer.status)] += 1
        except (OSError, http.client.HTTPException):
            statuses["no answer"] += 1
        finally:
            connection.close()
        latencies.append(time.perf_counter() - started)
        time.sleep(max(0.0, PROBE_INTERVAL_S - latencies[-1]))
    p50, p99 = np.percentile(latencies, [50, 99]) * 1e3
    return {
        "probes": len(latencies),
        "statuses": dict(sorted(statuses.items())),
        "p50_ms": float(p50),
        "p99_ms": float(p99),
        "max_ms": max(latencies) * 1e3,
    }
