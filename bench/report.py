"""Goals, smoke checks and BENCHMARKS.md (tables + matplotlib plots) from one bench run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def _point(http: list[dict[str, Any]], server: str, load: str, connections: int) -> dict[str, Any]:
    return next(
        r for r in http if r["server"] == server and r["load"] == load and r["connections"] == connections
    )


def _vs(ours: float, theirs: float, unit: str) -> str:
    return f"{ours:.2f} vs {theirs:.2f} {unit} = {ours / theirs:.2f}x"


def _goal(name: str, ok: bool, detail: str) -> dict[str, Any]:
    return {"name": name, "ok": bool(ok), "detail": detail}


def check_goals(
    http: list[dict[str, Any]], overloaded: dict[str, Any], sampler_rows: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The issue's must-show figures, as ratios of points measured side by side in this run."""
    ours = _point(http, "dropserve", "predict json", 64)
    lit = _point(http, "litserve", "predict json", 64)
    floor = _point(http, "floor", "predict json", 64)
    mc64 = _point(http, "dropserve", "uncertainty T=100", 64)
    mc1, p1 = _point(http, "dropserve", "uncertainty T=100", 1), _point(http, "dropserve", "predict json", 1)
    seed100 = {r["batch"]: r for r in sampler_rows if r["architecture"] == "seed" and r["samples"] == 100}
    client = overloaded["client"]
    bound_s = overloaded["queue_max_wait_ms"] / 1000
    return [
        _goal(
            "predict c=64 >= 3x LitServe req/s",
            ours["req_per_s"] >= 3 * lit["req_per_s"],
            _vs(ours["req_per_s"], lit["req_per_s"], "req/s"),
        ),
        _goal(
            "predict c=64 >= 0.35x HTTP floor req/s",
            ours["req_per_s"] >= 0.35 * floor["req_per_s"],
            _vs(ours["req_per_s"], floor["req_per_s"], "req/s"),
        ),
        _goal(
            "predict c=64 p99 <= LitServe's",
            ours["p99_us"] <= lit["p99_us"],
            f"{ours['p99_us'] / 1e3:.1f} vs {lit['p99_us'] / 1e3:.1f} ms",
        ),
        _goal(
            "uncertainty T=100 c=64 >= 0.8x predict req/s",
            mc64["req_per_s"] >= 0.8 * ours["req_per_s"],
            _vs(mc64["req_per_s"], ours["req_per_s"], "req/s"),
        ),
        _goal(
            "uncertainty T=100 c=1 p50 <= 1.3x predict's",
            mc1["p50_us"] <= 1.3 * p1["p50_us"],
            _vs(mc1["p50_us"] / 1e3, p1["p50_us"] / 1e3, "ms"),
        ),
        *(
            _goal(
                f"sampler seed T=100 B={batch}: shared prefix >= 5x replicate and >= 20x loop",
                row["speedup_vs_replicate"] >= 5 and row["speedup_vs_loop"] >= 20,
                f"{row['speedup_vs_replicate']:.1f}x replicate, {row['speedup_vs_loop']:.1f}x loop",
            )
            for batch, row in sorted(seed100.items())
        ),
        _goal(
            "overload c=512: 503s with Retry-After, no other 5xx",
            client["rejected_503"] > 0
            and client["rejected_503_with_retry_after"] == client["rejected_503"]
            and client["other_5xx"] == 0
            and overloaded["wrk"]["retry_after_503"] == overloaded["wrk"]["statuses"].get("503", 0),
            f"client statuses {client['statuses']}, wrk statuses {overloaded['wrk']['statuses']}",
        ),
        _goal(
            "overload c=512: accepted p99 bounded by the queue wait",
            client["accepted_p99_s"] is not None and client["accepted_p99_s"] <= bound_s,
            f"accepted p99 {1e3 * (client['accepted_p99_s'] or 0):.0f} ms, queue wait {1e3 * bound_s:.0f} ms",
        ),
    ]


def check_smoke(http: list[dict[str, Any]], overloaded: dict[str, Any]) -> list[dict[str, Any]]:
    """Behaviour only: every load point answered 200s, overload answered 200s and 503s only."""
    checks = []
    for r in http:
        bad = {s: n for s, n in r["statuses"].items() if s != "200"}
        checks.append(
            _goal(
                f"{r['server']} {r['load']} c={r['connections']} answers 200",
                r["requests"] > 0 and not bad,
                f"{r['requests']} requests, statuses {r['statuses']}",
            )
        )
    flood, probe = overloaded["wrk"]["statuses"], overloaded["client"]["statuses"]
    checks.append(
        _goal(
            "overload answers only 200 and 503, and serves some",
            set(flood) | set(probe) <= {"200", "503"} and "200" in flood,
            f"wrk statuses {flood}, probe statuses {probe}",
        )
    )
    return checks


def _plots(results: Path, http: list[dict[str, Any]], sampler_rows: list[dict[str, Any]]) -> None:
    series = sorted({(r["server"], r["load"]) for r in http})
    figure, (throughput, latency) = plt.subplots(1, 2, figsize=(11, 4))
    for server, load in series:
        rows = sorted(
            (r for r in http if r["server"] == server and r["load"] == load), key=lambda r: r["connections"]
        )
        c = [r["connections"] for r in rows]
        throughput.plot(c, [r["req_per_s"] for r in rows], marker="o", label=f"{server}: {load}")
        latency.plot(c, [r["p99_us"] / 1e3 for r in rows], marker="o", label=f"{server}: {load}")
    for axis, title in ((throughput, "requests/s"), (latency, "p99 latency (ms)")):
        axis.set_xscale("log", base=2)
        axis.set_xlabel("concurrent connections")
        axis.set_title(title)
    latency.set_yscale("log")
    throughput.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(results / "http.png", dpi=110)
    plt.close(figure)

    figure, axes = plt.subplots(1, 2, figsize=(11, 4))
    for axis, architecture in zip(axes, ("seed", "paper"), strict=True):
        rows = [r for r in sampler_rows if r["architecture"] == architecture and r["batch"] == 1]
        for method in ("shared_prefix", "replicate", "loop"):
            axis.plot(
                [r["samples"] for r in rows],
                [r["seconds"][method] * 1e3 for r in rows],
                marker="o",
                label=method,
            )
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_xlabel("MC samples T")
        axis.set_ylabel("ms per call (1 image)")
        axis.set_title(f"{architecture} architecture")
        axis.legend()
    figure.tight_layout()
    figure.savefig(results / "sampler.png", dpi=110)
    plt.close(figure)


def write_markdown(
    path: Path,
    results: Path,
    environment: dict[str, Any],
    http: list[dict[str, Any]],
    overloaded: dict[str, Any],
    sampler_rows: list[dict[str, Any]],
    goals: list[dict[str, Any]],
) -> None:
    _plots(results, http, sampler_rows)
    client = overloaded["client"]
    accepted_p50, accepted_p99 = 1e3 * (client["accepted_p50_s"] or 0), 1e3 * (client["accepted_p99_s"] or 0)
    lines = [
        "# Benchmarks",
        "",
        "Written by `make bench` (`python -m bench.run`) from one run: every figure below was measured "
        "side by side on the same machine, one server at a time alone on 127.0.0.1 with one worker "
        "(dropserve's one HTTP worker runs batches of several requests in its inference process; "
        "LitServe runs its own helper processes), `wrk -t1` on the same box; each server's points "
        "are taken in 3 interleaved rounds and merged "
        "(requests over time; the median round's percentiles), so slow drifts of the shared machine "
        "fall on all of them alike. Read the ratios; absolute numbers depend on the machine.",
        "",
        "Environment: " + ", ".join(f"{k} {v}" for k, v in environment.items()),
        "",
        "## Goals",
        "",
        "| goal | result | measured |",
        "| --- | --- | --- |",
        *(f"| {g['name']} | {'met' if g['ok'] else '**not met**'} | {g['detail']} |" for g in goals),
        "",
        "## HTTP load (wrk -t1)",
        "",
        "`floor` is FastAPI + uvicorn reading the body and answering a constant predict body "
        "(bench/floor_server.py); `litserve` is LitServe serving the same weights through the same "
        "DropoutMLP (bench/litserve_server.py, its own venv).",
        "",
        "| server | load | connections | req/s | p50 ms | p99 ms | statuses |",
        "| --- | --- | ---: | ---: | ---: | ---: | --- |",
        *(
            f"| {r['server']} | {r['load']} | {r['connections']} | {r['req_per_s']:.0f} | "
            f"{r['p50_us'] / 1e3:.2f} | "
            f"{r['p99_us'] / 1e3:.2f} | {r['statuses']} |"
            for r in http
        ),
        "",
        "![HTTP load](results/http.png)",
        "",
        "## Overload (512 connections, predict json)",
        "",
        f"- wrk: {overloaded['wrk']['req_per_s']:.0f} answers/s, statuses {overloaded['wrk']['statuses']}, "
        f"503s carrying Retry-After: {overloaded['wrk']['retry_after_503']}",
        f"- probe on {client['connections']} more connections during the flood (bench/overload.py): "
        f"statuses {client['statuses']}, accepted "
        f"{client['accepted_per_s']:.0f}/s, accepted p50 {accepted_p50:.0f} ms, p99 {accepted_p99:.0f} ms; "
        "queue wait bound "
        f"{overloaded['queue_max_wait_ms']:.0f} ms (DROPSERVE_QUEUE_MAX_WAIT_MS)",
        "",
        "## MC sampler in process (B images per call, one torch thread, median ms per call)",
        "",
        "| architecture | B | T | shared prefix | replicate (baal style) | loop | vs replicate | vs loop |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        *(
            f"| {r['architecture']} | {r['batch']} | {r['samples']} | "
            f"{r['seconds']['shared_prefix'] * 1e3:.3f} | "
            f"{r['seconds']['replicate'] * 1e3:.3f} | {r['seconds']['loop'] * 1e3:.3f} | "
            f"{r['speedup_vs_replicate']:.1f}x | {r['speedup_vs_loop']:.1f}x |"
            for r in sampler_rows
        ),
        "",
        "![MC sampler](results/sampler.png)",
        "",
    ]
    path.write_text("\n".join(lines))
