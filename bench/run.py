"""`python -m bench.run [--smoke]`: HTTP load with wrk against dropserve, its HTTP floor and
LitServe (one at a time, alone on 127.0.0.1, one worker each), the overload run and the in-process
sampler; writes bench/results/*.json and BENCHMARKS.md, and checks the speed goals (full run) or
only that every server answers correctly (--smoke). Exits 1 when a goal or a check fails."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from bench import report, sampler
from bench.overload import overload
from models.artifact import list_versions, load_artifact

ROOT = Path(__file__).resolve().parent.parent
LITSERVE_PYTHON = ROOT / "bench" / ".venv-litserve" / "bin" / "python"
PORT = 8765


@dataclass(frozen=True)
class Server:
    name: str
    command: list[str]
    env: dict[str, str]
    ready_path: str


@dataclass(frozen=True)
class Load:
    label: str  # what the table calls it
    path: str
    body: Path
    content_type: str


def digit_pixels() -> np.ndarray:
    """A 28x28 '7'-like stroke in [0, 1], MNIST style (light ink on a dark ground)."""
    pixels = np.zeros((28, 28), dtype=np.uint8)
    pixels[6:9, 8:21] = 255
    for row in range(9, 23):
        col = 20 - (row - 9) // 2
        pixels[row, col - 1 : col + 2] = 230
    return pixels


def write_bodies(folder: Path) -> dict[str, tuple[Path, str]]:
    pixels = digit_pixels()
    flat = [round(v, 4) for v in (pixels.astype(np.float64) / 255).reshape(-1).tolist()]
    bodies: dict[str, tuple[bytes, str]] = {
        "json": (json.dumps({"instances": [flat]}).encode(), "application/json"),
        "json-t100": (json.dumps({"instances": [flat], "samples": 100}).encode(), "application/json"),
    }
    png = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(png, format="PNG")
    boundary = "benchboundary7f3a"
    multipart = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="digit.png"\r\n'
            "Content-Type: image/png\r\n\r\n"
        ).encode()
        + png.getvalue()
        + f"\r\n--{boundary}--\r\n".encode()
    )
    bodies["png"] = (multipart, f"multipart/form-data; boundary={boundary}")
    paths = {}
    for name, (data, content_type) in bodies.items():
        (folder / f"{name}.body").write_bytes(data)
        paths[name] = (folder / f"{name}.body", content_type)
    return paths


def start(command: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    """A server in its own process group, so that stop() ends its workers too (LitServe forks)."""
    return subprocess.Popen(command, env={**os.environ, **env}, cwd=ROOT, start_new_session=True)


def stop(process: subprocess.Popen[bytes]) -> None:
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


def wait_ready(port: int, path: str, process: subprocess.Popen[bytes], timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode} before it was ready")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=1) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"server not ready on port {port} after {timeout_s} s")


def post(port: int, path: str, body: bytes, content_type: str) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", data=body, headers={"Content-Type": content_type}
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        return answer.status, json.loads(answer.read())


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
        str(ROOT / "bench" / "post.lua"),
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


def check_answer(server: str, prediction: dict[str, Any], reference: np.ndarray, sampled: bool) -> None:
    """Predictions match the in-process eval-mode answer; MC means agree on the label."""
    probabilities = np.asarray(prediction["probabilities"])
    if prediction["label"] != int(reference.argmax()) or not (
        sampled or np.allclose(probabilities, reference, atol=1e-4)
    ):
        raise RuntimeError(f"{server} answered {prediction}, expected probabilities {reference.tolist()}")


ROUNDS = 3
"""Each server's points are measured in this many interleaved rounds (every load and level once
per round, after a second of warm-up at that level) and merged: slow drifts of a shared machine
then fall on all points alike."""


def run_server(
    server: Server, loads: list[Load], levels: list[int], seconds: float, reference: np.ndarray, rounds: int
) -> list[dict[str, Any]]:
    """Start `server` alone, check it answers correctly, load it at each level, stop it."""
    process = start(server.command, server.env)
    try:
        wait_ready(PORT, server.ready_path, process)
        for load in loads:
            _, answer = post(PORT, load.path, load.body.read_bytes(), load.content_type)
            if server.name != "floor":  # the floor answers a constant by design
                check_answer(
                    f"{server.name} {load.label}",
                    answer["predictions"][0],
                    reference,
                    "uncertainty" in load.path,
                )
            wrk(PORT, load, 8, min(seconds, 1.0))  # warm-up
        measured: dict[tuple[str, int], list[dict[str, Any]]] = {}
        for _ in range(rounds):
            # level by level, the loads one after the other: the points a goal compares (predict
            # and uncertainty at one connection, say) are measured seconds apart, not half a round
            for connections in levels:
                for load in loads:
                    if rounds > 1:
                        wrk(PORT, load, connections, 1.0)  # warm-up at this level, discarded
                    measured.setdefault((load.label, connections), []).append(
                        wrk(PORT, load, connections, seconds / rounds)
                    )
        rows = []
        for label, connections in [(load.label, c) for load in loads for c in levels]:
            result = merge_rounds(measured[label, connections])
            result.update(server=server.name, load=label)
            rate, p50, p99 = result["req_per_s"], result["p50_us"] / 1e3, result["p99_us"] / 1e3
            print(
                f"{server.name:10s} {label:18s} c={connections:<3d} {rate:8.0f} req/s "
                f"p50 {p50:7.2f} ms p99 {p99:7.2f} ms {result['statuses']}",
                flush=True,
            )
            rows.append(result)
        return rows
    finally:
        stop(process)


def merge_rounds(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """One point from its rounds: requests and time add up, latency percentiles are the median
    round's (wrk reports percentiles, not the samples behind them)."""
    merged = dict(parts[0])
    merged["requests"] = sum(p["requests"] for p in parts)
    merged["duration_us"] = sum(p["duration_us"] for p in parts)
    merged["req_per_s"] = merged["requests"] / (merged["duration_us"] / 1e6)
    for key in ("p50_us", "p90_us", "p99_us"):
        merged[key] = float(np.median([p[key] for p in parts]))
    merged["max_us"] = max(p["max_us"] for p in parts)
    merged["statuses"] = {
        status: sum(p["statuses"].get(status, 0) for p in parts)
        for status in sorted({s for p in parts for s in p["statuses"]})
    }
    merged["retry_after_503"] = sum(p["retry_after_503"] for p in parts)
    merged["rounds"] = len(parts)
    return merged


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="a few seconds per point; no speed goals")
    parser.add_argument("--artifacts", type=Path, default=ROOT / "artifacts")
    parser.add_argument("--model", default="mnist-mlp")
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    seconds = 2.0 if args.smoke else 10.0
    levels = [1, 8, 64]

    versions = list_versions(args.artifacts / args.model)
    if not versions:
        print(f"no {args.model} under {args.artifacts}; train one first (make train)", file=sys.stderr)
        return 2
    source = args.artifacts / args.model / str(versions[-1])
    work = Path(tempfile.mkdtemp(prefix="dropserve-bench-"))
    try:
        repository = work / "repository"
        shutil.copytree(source, repository / args.model / str(versions[-1]))  # fixed while we measure
        artifact = repository / args.model / str(versions[-1])
        loaded = load_artifact(artifact)
        bodies = write_bodies(work)
        x = torch.from_numpy(
            (digit_pixels().astype(np.float64) / 255).round(4).reshape(1, 784).astype(np.float32)
        )
        with torch.inference_mode():
            reference = torch.softmax(loaded.model(x), dim=-1)[0].numpy()

        python = str(ROOT / ".venv" / "bin" / "python")
        dropserve_env = {
            "DROPSERVE_MODEL_REPOSITORY": str(repository),
            "DROPSERVE_PORT": str(PORT),
            "DROPSERVE_LOG_LEVEL": "warning",
        }
        json_load = Load("predict json", "/v1/predict", *bodies["json"])
        servers = [
            (
                Server("dropserve", [python, "-m", "service"], dropserve_env, "/readyz"),
                [
                    json_load,
                    Load("predict png", "/v1/predict", *bodies["png"]),
                    Load("uncertainty T=100", "/v1/uncertainty", *bodies["json-t100"]),
                ],
            ),
            (Server("floor", [python, "-m", "bench.floor_server", str(PORT)], {}, "/readyz"), [json_load]),
            (
                Server(
                    "litserve",
                    [str(LITSERVE_PYTHON), "-m", "bench.litserve_server", str(artifact), str(PORT)],
                    {"PYTHONPATH": str(ROOT)},
                    "/health",
                ),
                [json_load],
            ),
        ]
        http: list[dict[str, Any]] = []
        for server, loads in servers:
            http += run_server(server, loads, levels, seconds, reference, 1 if args.smoke else ROUNDS)

        overloaded = run_overload(python, dropserve_env, json_load, 3.0 if args.smoke else 10.0)
        sampler_rows = sampler.run((10, 100) if args.smoke else (10, 100, 1000), 0.05 if args.smoke else 1.0)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    environment = {
        "when": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "wrk": subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.splitlines()[0],
        "mode": "smoke" if args.smoke else "full",
        "seconds_per_point": seconds,
        "model": f"{args.model}/{versions[-1]}",
    }
    goals = [] if args.smoke else report.check_goals(http, overloaded, sampler_rows)
    checks = report.check_smoke(http, overloaded)
    args.results.mkdir(parents=True, exist_ok=True)
    suffix = "-smoke" if args.smoke else ""
    for name, data in {
        "http": http,
        "overload": overloaded,
        "sampler": sampler_rows,
        "summary": {"environment": environment, "goals": goals, "checks": checks},
    }.items():
        (args.results / f"{name}{suffix}.json").write_text(json.dumps(data, indent=2) + "\n")
    if not args.smoke:
        report.write_markdown(
            ROOT / "bench" / "BENCHMARKS.md", args.results, environment, http, overloaded, sampler_rows, goals
        )
    failed = [g for g in goals + checks if not g["ok"]]
    for g in goals + checks:
        print(f"{'ok  ' if g['ok'] else 'FAIL'} {g['name']}: {g['detail']}")
    return 1 if failed else 0


PROBE_CONNECTIONS = 16


def run_overload(python: str, env: dict[str, str], load: Load, seconds: float) -> dict[str, Any]:
    """dropserve flooded by wrk at 512 connections (throughput, statuses), while a light probe on
    a few more connections measures accepted requests' latency apart from the 503s."""
    process = start([python, "-m", "service"], env)
    try:
        wait_ready(PORT, "/readyz", process)
        wrk(PORT, load, 64, 1.0)
        command, wrk_env = wrk_command(PORT, load, 512, seconds + 2)
        flood = subprocess.Popen(command, env=wrk_env, stdout=subprocess.PIPE, text=True)
        try:
            time.sleep(1.0)  # the flood is on before the probe starts
            body = load.body.read_bytes()
            client = overload(
                "127.0.0.1", PORT, load.path, body, load.content_type, PROBE_CONNECTIONS, seconds
            )
            out, _ = flood.communicate(timeout=seconds + 30)
        finally:
            if flood.poll() is None:
                flood.kill()
        by_wrk = wrk_result(out, 512)
        rate, statuses = by_wrk["req_per_s"], by_wrk["statuses"]
        print(f"overload wrk c=512: {rate:.0f} req/s statuses {statuses}", flush=True)
        print(f"overload probe c={PROBE_CONNECTIONS}: {client}", flush=True)
        return {"wrk": by_wrk, "client": client, "queue_max_wait_ms": _setting("queue_max_wait_ms")}
    finally:
        stop(process)


def _setting(name: str) -> Any:
    from service.settings import Settings

    return getattr(Settings(), name)


if __name__ == "__main__":
    sys.exit(main())
