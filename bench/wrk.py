"""HTTP load with wrk (one thread, N keep-alive connections, bench/post.lua as the script): one load
point's requests, time, latency percentiles and statuses, and the merge of a point's rounds."""

from __future__ import annotations

import json
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

SCRIPT = Path(__file__).resolve().parent / "post.lua"


@dataclass(frozen=True)
class Load:
    label: str  # what the tables call it
    path: str
    body: Path
    content_type: str


def wrk_command(port: int, load: Load, connections: int, seconds: float) -> tuple[list[str], dict[str, str]]:
    env = {**os.environ, "BENCH_BODY": str(load.body), "BENCH_CONTENT_TYPE": load.content_type}
    command = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "10s",
        "-s",
        str(SCRIPT),
        f"http://127.0.0.1:{port}{load.path}",
    ]
    return command, env


def wrk_result(out: str, connections: int) -> dict[str, Any]:
    match = re.search(r"^BENCH_JSON (.*)$", out, re.MULTILINE)
    if match is None:
        raise RuntimeError(f"wrk printed no summary:\n{out}")
    result: dict[str, Any] = json.loads(match.group(1))
    result["req_per_s"] = result["requests"] / (result["duration_us"] / 1e6)
    result["connections"] = connections
    return result


def wrk(port: int, load: Load, connections: int, seconds: float) -> dict[str, Any]:
    command, env = wrk_command(port, load, connections, seconds)
    out = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout
    return wrk_result(out, connections)


def merge_rounds(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """One point from its rounds: requests/s and each latency percentile are the median over the
    rounds (wrk reports percentiles, not the samples behind them), so that one round disturbed by
    the rest of a shared machine does not move the point; requests, time and statuses add up."""
    merged = dict(parts[0])
    merged["requests"] = sum(p["requests"] for p in parts)
    merged["duration_us"] = sum(p["duration_us"] for p in parts)
    for key in ("req_per_s", "p50_us", "p90_us", "p99_us"):
        merged[key] = float(np.median([p[key] for p in parts]))
    merged["max_us"] = max(p["max_us"] for p in parts)
    merged["statuses"] = {
        status: sum(p["statuses"].get(status, 0) for p in parts)
        for status in sorted({s for p in parts for s in p["statuses"]})
    }
    merged["retry_after_503"] = sum(p["retry_after_503"] for p in parts)
    merged["socket_errors"] = {
        kind: sum(p["socket_errors"][kind] for p in parts) for kind in parts[0]["socket_errors"]
    }
    merged["rounds"] = len(parts)
    merged["per_round"] = {key: [p[key] for p in parts] for key in ("req_per_s", "p50_us")}
    return merged
