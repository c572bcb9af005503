"""`python -m bench.run [--smoke] [--baseline REF]`: an A/B benchmark of dropserve's engine.

HTTP load with wrk on 127.0.0.1 against the old engine (a worktree of commit REF) and the new one
(this working tree), side by side, then the HTTP floor of the stack and LitServe, each alone; in
interleaved rounds, so that slow drifts of a shared machine fall on all of them. Then the overload
run, the in-process sampler and the statistics kernel. Writes bench/results/*.json and the results section of
docs/performance.md, and checks the goals. --smoke: a few seconds per point on the new engine, the
floor and LitServe only, checking that each answers correctly. Exits 1 when a goal or a check
fails."""

from __future__ import annotations

import argparse
import contextlib
import io
import itertools
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from bench import baseline, report, sampler, statistics_kernel
from bench.overload import overload
from bench.servers import Server, serving
from bench.wrk import Load, merge_rounds, wrk
from models.artifact import list_versions, load_artifact

ROOT = Path(__file__).resolve().parent.parent
LITSERVE_PYTHON = ROOT / "bench" / ".venv-litserve" / "bin" / "python"
PORT = 8765
LEVELS = (1, 8, 64)  # concurrent connections
ROUNDS = 5
"""A full run measures each point in this many rounds. In a round the two engines are started side
by side, then the floor alone, then LitServe alone; each is checked and loaded at every level and
load, each point after a second of warm-up at that level, old and new engine one after the other.
The next round takes everything in the reverse order. A point merges its rounds (merge_rounds)."""


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


def post(port: int, load: Load) -> dict[str, Any]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{load.path}",
        data=load.body.read_bytes(),
        headers={"Content-Type": load.content_type},
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        body: dict[str, Any] = json.loads(answer.read())
        return body


def check_answer(server: str, prediction: dict[str, Any], reference: np.ndarray, sampled: bool) -> None:
    """Predictions match the in-process eval-mode answer; MC means agree on the label."""
    probabilities = np.asarray(prediction["probabilities"])
    if prediction["label"] != int(reference.argmax()) or not (
        sampled or np.allclose(probabilities, reference, atol=1e-4)
    ):
        raise RuntimeError(f"{server} answered {prediction}, expected probabilities {reference.tolist()}")


def measure(
    turns: list[tuple[Server, ...]], seconds: float, rounds: int, reference: np.ndarray, logs: Path
) -> list[dict[str, Any]]:
    """Every server's loads at every level, `seconds` per point over `rounds` rounds. The servers of
    a turn run side by side and take the same loads; one of them is loaded at a time."""
    measured: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
    for index in range(rounds):
        forward = index % 2 == 0
        for turn in turns if forward else turns[::-1]:
            order = turn if forward else turn[::-1]
            with contextlib.ExitStack() as running:
                for server in turn:
                    running.enter_context(serving(server, logs / f"{server.name}.log"))
                for server in order:
                    check_and_warm_up(server, reference)
                # level by level, the loads one after the other, the servers of a turn one after
                # the other: the points a goal compares (old and new engine at one load, predict
                # and uncertainty at one connection) are measured seconds apart
                for connections, load, server in itertools.product(LEVELS, turn[0].loads, order):
                    if rounds > 1:
                        wrk(server.port, load, connections, 1.0)  # warm-up at this level, discarded
                    point = wrk(server.port, load, connections, seconds / rounds)
                    measured.setdefault((server.name, load.label, connections), []).append(point)
                    print(
                        f"round {index + 1}/{rounds} {server.name:8s} {load.label:18s} "
                        f"c={connections:<3d}{point['req_per_s']:8.0f} req/s  "
                        f"p50 {point['p50_us'] / 1e3:6.2f} ms",
                        flush=True,
                    )
    return [
        {
            **merge_rounds(measured[server.name, load.label, connections]),
            "server": server.name,
            "load": load.label,
        }
        for server in (s for turn in turns for s in turn)
        for load in server.loads
        for connections in LEVELS
    ]


def check_and_warm_up(server: Server, reference: np.ndarray) -> None:
    """Each load answered correctly once, then a second of load at 8 connections."""
    for load in server.loads:
        answer = post(server.port, load)
        if server.name != "floor":  # the floor answers a constant by design
            sampled = "uncertainty" in load.path
            check_answer(f"{server.name} {load.label}", answer["predictions"][0], reference, sampled)
        wrk(server.port, load, 8, 1.0)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--smoke", action="store_true", help="a few seconds per point; no speed goals")
    parser.add_argument("--workers", type=int, default=2, help="the new engine's DROPSERVE_WORKERS")
    parser.add_argument(
        "--baseline",
        default=os.environ.get("BASELINE"),
        metavar="REF",
        help="the old engine's commit (default: $BASELINE; `make bench` sets it)",
    )
    parser.add_argument("--seconds", type=float, help="seconds per point (default 10, --smoke 2)")
    parser.add_argument("--artifacts", type=Path, default=ROOT / "artifacts")
    parser.add_argument("--model", default="mnist-mlp")
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    if not args.smoke and not args.baseline:
        parser.error("a full run compares against an old engine: name its commit with --baseline REF")
    seconds = args.seconds or (2.0 if args.smoke else 10.0)
    rounds = 1 if args.smoke else ROUNDS

    versions = list_versions(args.artifacts / args.model)
    if not versions:
        print(f"no {args.model} under {args.artifacts}; train one first (make train)", file=sys.stderr)
        return 2
    python = sys.executable
    load_before = os.getloadavg()[0]
    if load_before >= 0.5:
        print(f"warning: load average {load_before:.2f}: other work on this machine will disturb the figures")
    with tempfile.TemporaryDirectory(prefix="dropserve-bench-") as folder, contextlib.ExitStack() as stack:
        work = Path(folder)
        repository = work / "repository"
        artifact = repository / args.model / str(versions[-1])
        shutil.copytree(args.artifacts / args.model / str(versions[-1]), artifact)  # fixed while we measure
        bodies = write_bodies(work)
        x = torch.from_numpy(
            (digit_pixels().astype(np.float64) / 255).round(4).reshape(1, 784).astype(np.float32)
        )
        with torch.inference_mode():
            reference = torch.softmax(load_artifact(artifact).model(x), dim=-1)[0].numpy()

        predict = Load("predict json", "/v1/predict", *bodies["json"])
        engine_loads = (
            predict,
            Load("predict png", "/v1/predict", *bodies["png"]),
            Load("uncertainty T=100", "/v1/uncertainty", *bodies["json-t100"]),
        )

        def engine(name: str, tree: Path, port: int, settings: dict[str, str]) -> Server:
            """Both engines get these settings and their own defaults for everything else."""
            env = {
                "DROPSERVE_MODEL_REPOSITORY": str(repository),
                "DROPSERVE_PORT": str(port),
                "DROPSERVE_HOST": "127.0.0.1",
                "PYTHONPATH": str(tree),
                **settings,
            }
            return Server(name, port, [python, "-m", "service"], tree, env, "/readyz", engine_loads)

        # Two processes each: the old engine's server and inference process, the new one's two
        # workers (its way past one core).
        new = engine("new", ROOT, PORT, {"DROPSERVE_WORKERS": str(args.workers)})
        engines: tuple[Server, ...] = (new,)
        if not args.smoke:
            engines = (
                engine(
                    "old", stack.enter_context(baseline.checkout(ROOT, args.baseline, python)), PORT + 1, {}
                ),
                new,
            )
        floor = [python, "-m", "bench.floor_server", str(PORT)]
        litserve = [str(LITSERVE_PYTHON), "-m", "bench.litserve_server", str(artifact), str(PORT)]
        turns = [
            engines,  # side by side, so that each of their points is measured seconds apart
            (Server("floor", PORT, floor, ROOT, {}, "/readyz", (predict,)),),
            (Server("litserve", PORT, litserve, ROOT, {"PYTHONPATH": str(ROOT)}, "/health", (predict,)),),
        ]

        http = measure(turns, seconds, rounds, reference, work)
        overloaded = overload(new, predict, 3.0 if args.smoke else 10.0, work / "new.log")
        sampler_rows = sampler.run((10, 100) if args.smoke else (10, 100, 1000), 0.05 if args.smoke else 1.0)
        statistics_rows = statistics_kernel.run(
            (10, 100) if args.smoke else (10, 100, 1000), 0.05 if args.smoke else 0.5
        )

    environment = {
        "when": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "cpus": os.cpu_count(),
        "cpu": cpu_model(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "wrk": subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.split()[1],
        "mode": "smoke" if args.smoke else "full",
        "seconds_per_point": seconds,
        "rounds": rounds,
        "model": f"{args.model}/{versions[-1]}",
        "load_average_at_start": round(load_before, 2),  # of the last minute; a quiet machine's is near 0
        "new": _describe(ROOT),
        "old": None if args.smoke else f"{args.baseline} ({baseline.commit_of(ROOT, args.baseline)})",
    }
    goals = [] if args.smoke else report.check_goals(http, overloaded, sampler_rows)
    checks = report.check_smoke(http, overloaded)
    args.results.mkdir(parents=True, exist_ok=True)
    suffix = "-smoke" if args.smoke else ""
    for name, data in {
        "http": http,
        "overload": overloaded,
        "sampler": sampler_rows,
        "statistics": statistics_rows,
        "summary": {"environment": environment, "goals": goals, "checks": checks},
    }.items():
        (args.results / f"{name}{suffix}.json").write_text(json.dumps(data, indent=2) + "\n")
    if not args.smoke:
        report.write_results(report.DOC, args.results)
    for g in goals + checks:
        print(f"{'ok  ' if g['ok'] else 'FAIL'} {g['name']}: {g['detail']}")
    return 1 if any(not g["ok"] for g in goals + checks) else 0


def cpu_model() -> str:
    """The CPU's model name and its widest vector extension: absolute figures depend on both."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or "unknown"
    names = [line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")]
    name = names[0] if names else "?"
    flags = set(info.split())
    return f"{name} ({'avx512f' if 'avx512f' in flags else 'avx2' if 'avx2' in flags else 'no avx2'})"


def _describe(root: Path) -> str:
    """The working tree's commit, marked -dirty when it holds changes (the new engine usually does)."""
    done = subprocess.run(
        ["git", "describe", "--always", "--dirty"], cwd=root, capture_output=True, text=True
    )
    return done.stdout.strip() or "unknown"


if __name__ == "__main__":
    sys.exit(main())
