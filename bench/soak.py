"""Soak: a few minutes of mixed traffic against a real `python -m service` on loopback, with a few
malformed requests mixed in. Every response is counted by kind and status, and the resident memory
of every server process (the server and its workers) is sampled from /proc over time.

    python -m bench.soak --duration 180 --out bench/results/soak.json

Fails (exit 1) on any 5xx, any request without an answer, or a malformed request accepted.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import io
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
import zlib
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image

PAGE = os.sysconf("SC_PAGE_SIZE")


def digit_png(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = np.zeros((28, 28), dtype=np.uint8)
    top, left = rng.integers(3, 8), rng.integers(8, 16)
    pixels[top : top + 16, left : left + 3] = 255
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def requests_mix(model: str) -> list[tuple[float, str, dict[str, Any], bool]]:
    """(weight, kind, httpx request arguments, well-formed) of each kind of request sent."""
    png = digit_png(0)
    one = [np.random.default_rng(1).random(784).round(4).tolist()]
    header = (50_000).to_bytes(4, "big") * 2 + png[24:29]  # IHDR declaring 50000x50000 pixels
    header_bomb = png[:16] + header + zlib.crc32(b"IHDR" + header).to_bytes(4, "big") + png[33:]
    good: list[tuple[float, str, dict[str, Any]]] = [
        (40, "predict json", {"url": "/v1/predict", "json": {"instances": one}}),
        (20, "uncertainty json", {"url": "/v1/uncertainty", "json": {"instances": one, "samples": 100}}),
        (15, "predict png", {"url": "/v1/predict", "content": png, "headers": {"content-type": "image/png"}}),
        (
            10,
            "uncertainty multipart png",
            {"url": "/v1/uncertainty?samples=50&seed=3", "files": {"file": ("d.png", png, "image/png")}},
        ),
        (
            5,
            "uncertainty json b64 x8",
            {
                "url": f"/v1/models/{model}/uncertainty",
                "json": {"instances": [{"b64": base64.b64encode(png).decode()}] * 8, "samples": 30},
            },
        ),
    ]
    as_json: dict[str, str] = {"content-type": "application/json"}
    bad: list[tuple[str, dict[str, Any]]] = [
        ("bad json", {"url": "/v1/predict", "content": b'{"instances": [', "headers": as_json}),
        ("wrong shape", {"url": "/v1/predict", "json": {"instances": [[0.5] * 783]}}),
        ("NaN literal", {"url": "/v1/predict", "content": b'{"instances": [[NaN]]}', "headers": as_json}),
        ("not an image", {"url": "/v1/predict", "content": b"GIF89a" + b"\0" * 40, "headers": raw("gif")}),
        ("svg", {"url": "/v1/predict", "content": b"<svg/>", "headers": raw("svg+xml")}),
        ("seed --1", {"url": "/v1/uncertainty?seed=--1", "content": png, "headers": raw("png")}),
        ("image bomb header", {"url": "/v1/predict", "content": header_bomb, "headers": raw("png")}),
        ("unknown model", {"url": "/v1/models/nope/predict", "json": {"instances": one}}),
        ("booleans", {"url": "/v1/predict", "json": {"instances": [[True] * 784]}}),
    ]
    mix = [(weight, kind, request, True) for weight, kind, request in good]
    mix += [(1, f"malformed: {kind}", request, False) for kind, request in bad]  # ~9% of requests
    return mix


def raw(subtype: str) -> dict[str, str]:
    return {"content-type": f"image/{subtype}"}


def process_tree(root: int) -> list[int]:
    """`root` and its descendants (its worker processes), from /proc."""
    children: dict[int, list[int]] = defaultdict(list)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children[ppid].append(int(entry.name))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return sorted(tree)


def rss_mib(pid: int) -> float | None:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE / 2**20
    except (OSError, IndexError, ValueError):
        return None


async def sample_memory(
    root: int, every_s: float, samples: list[dict[str, Any]], stop: asyncio.Event
) -> None:
    started = time.monotonic()
    while not stop.is_set():
        rss = {pid: rss_mib(pid) for pid in process_tree(root)}
        samples.append(
            {
                "t": round(time.monotonic() - started, 1),
                "rss_mib": {str(p): round(m, 1) for p, m in rss.items() if m},
            }
        )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every_s)


async def client_loop(
    client: httpx.AsyncClient,
    mix: list[tuple[float, str, dict[str, Any], bool]],
    deadline: float,
    counts: dict[str, Counter],
    rng: random.Random,
) -> None:
    weights = [weight for weight, *_ in mix]
    while time.monotonic() < deadline:
        _, kind, request, _ = rng.choices(mix, weights)[0]
        arguments = dict(request)
        try:
            response = await client.post(arguments.pop("url"), **arguments)
            counts[kind][str(response.status_code)] += 1
        except httpx.TransportError as error:
            counts[kind][f"error {type(error).__name__}"] += 1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(repository: Path, port: int, workers: int, log: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DROPSERVE_")}
    env.update(
        DROPSERVE_MODEL_REPOSITORY=str(repository),
        DROPSERVE_HOST="127.0.0.1",  # loopback only
        DROPSERVE_PORT=str(port),
        DROPSERVE_WORKERS=str(workers),
        DROPSERVE_ACCESS_LOG="false",
    )
    with log.open("wb") as output:
        return subprocess.Popen([sys.executable, "-m", "service"], env=env, stdout=output, stderr=output)


def wait_ready(url: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"the server exited during start-up:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    sys.exit(f"{url}/readyz did not answer 200 within 120 s")


def tiny_repository() -> Path:
    """A small trained-shape model when no repository is given (the soak tests the server, not it)."""
    import torch

    from models.artifact import save_artifact
    from models.network import DropoutMLP
    from models.spec import Manifest, MLPSpec, Normalization

    root = Path(tempfile.mkdtemp(prefix="dropserve-soak-"))
    spec = MLPSpec(hidden_sizes=(128,))
    torch.manual_seed(0)
    manifest = Manifest("mnist-mlp", spec, Normalization(), [str(d) for d in range(10)])
    save_artifact(root, DropoutMLP(spec).eval(), manifest)
    return root


def summarize(rss: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per process: RSS at start, peak and end (MiB)."""
    series: dict[str, list[float]] = defaultdict(list)
    for sample in rss:
        for pid, mib in sample["rss_mib"].items():
            series[pid].append(mib)
    return {pid: {"start": v[0], "peak": max(v), "end": v[-1]} for pid, v in series.items() if v}


async def soak(url: str, root: int, args: argparse.Namespace) -> dict[str, Any]:
    mix = requests_mix(args.model)
    counts: dict[str, Counter] = defaultdict(Counter)
    rss: list[dict[str, Any]] = []
    stop = asyncio.Event()
    sampler = asyncio.create_task(sample_memory(root, args.sample_every, rss, stop))
    started = time.monotonic()
    limits = httpx.Limits(max_connections=args.connections, max_keepalive_connections=args.connections)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as client:
        await asyncio.gather(
            *(
                client_loop(client, mix, started + args.duration, counts, random.Random(n))
                for n in range(args.connections)
            )
        )
    duration = time.monotonic() - started
    await asyncio.sleep(args.sample_every)  # one sample after the load
    stop.set()
    await sampler
    statuses = Counter[str]()
    for by_status in counts.values():
        statuses.update(by_status)
    well_formed = {kind for _, kind, _, ok in mix if ok}
    accepted_malformed = sum(
        n
        for kind, by in counts.items()
        if kind not in well_formed
        for s, n in by.items()
        if s.startswith("2")
    )
    return {
        "duration_s": round(duration, 1),
        "connections": args.connections,
        "workers": args.workers,
        "requests": sum(statuses.values()),
        "requests_per_s": round(sum(statuses.values()) / duration, 1),
        "statuses": dict(sorted(statuses.items())),
        "by_kind": {kind: dict(sorted(by.items())) for kind, by in sorted(counts.items())},
        "server_5xx": sum(n for s, n in statuses.items() if s.startswith("5")),
        "unanswered": sum(n for s, n in statuses.items() if s.startswith("error")),
        "malformed_accepted": accepted_malformed,
        "rss_mib": summarize(rss),
        "rss_samples": rss,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__)
    parser.add_argument("--duration", type=float, default=180.0, help="seconds of load")
    parser.add_argument("--connections", type=int, default=32, help="concurrent keep-alive connections")
    parser.add_argument("--workers", type=int, default=1, help="DROPSERVE_WORKERS of the server")
    parser.add_argument(
        "--repository", type=Path, help="model repository (default: a fresh 784-128-10 model)"
    )
    parser.add_argument("--model", default="mnist-mlp")
    parser.add_argument("--sample-every", type=float, default=2.0, help="seconds between RSS samples")
    parser.add_argument(
        "--client-nice", type=int, default=0, help="lower the client's priority, not the server's"
    )
    parser.add_argument("--out", type=Path, default=Path("bench/results/soak.json"))
    args = parser.parse_args(argv)

    repository = args.repository or tiny_repository()
    port = free_port()
    log = Path(tempfile.mkdtemp(prefix="dropserve-soak-log-")) / "server.log"
    server = start_server(repository, port, args.workers, log)
    if args.client_nice:
        os.nice(args.client_nice)  # after the server started: it keeps its own priority
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, server, log)
        result = asyncio.run(soak(url, server.pid, args))
    finally:
        server.terminate()
        server.wait(timeout=60)
    result["server_exit_code"] = server.returncode
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")

    print(
        f"duration {result['duration_s']} s, {result['requests']} requests ({result['requests_per_s']}/s), "
        f"{args.connections} connections, {args.workers} worker(s)"
    )
    print("statuses: " + ", ".join(f"{s}: {n}" for s, n in result["statuses"].items()))
    for pid, rss in result["rss_mib"].items():
        print(f"RSS of {pid}: start {rss['start']} MiB, peak {rss['peak']} MiB, end {rss['end']} MiB")
    print(
        f"5xx: {result['server_5xx']}, unanswered: {result['unanswered']}, malformed accepted: "
        f"{result['malformed_accepted']}, server exit code {server.returncode}; written to {args.out}"
    )
    failed = result["server_5xx"] or result["unanswered"] or result["malformed_accepted"] or server.returncode
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
