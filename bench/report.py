"""Goals, smoke checks, and the results section of docs/performance.md (tables + matplotlib plots)
from one bench run's bench/results/*.json. `python -m bench.report` rewrites that section alone."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "performance.md"
BEGIN = "<!-- bench results: written by bench/report.py from bench/results/*.json; edits below are lost -->"
END = "<!-- end of bench results -->"

Row = dict[str, Any]


def _point(http: list[Row], server: str, load: str, connections: int) -> Row | None:
    return next(
        (r for r in http if r["server"] == server and r["load"] == load and r["connections"] == connections),
        None,
    )


def paired_ratio(ours: Row, theirs: Row, key: str) -> float:
    """ours / theirs of `key` ("req_per_s" or "p50_us"), the median over rounds of the two points'
    ratio within a round: both were measured in the same round, so a drift of the machine from one
    round to the next cancels, and the median drops a round that was disturbed."""
    return float(np.median(np.divide(ours["per_round"][key], theirs["per_round"][key])))


def _vs(ours: Row, theirs: Row, key: str) -> str:
    scale, unit = (1e-3, "ms") if key.endswith("_us") else (1.0, "req/s")
    return (
        f"{ours[key] * scale:.2f} vs {theirs[key] * scale:.2f} {unit} "
        f"(paired {paired_ratio(ours, theirs, key):.2f}x)"
    )


def _goal(name: str, ok: bool, detail: str) -> Row:
    return {"name": name, "ok": bool(ok), "detail": detail}


def check_goals(http: list[Row], overloaded: Row, sampler_rows: list[Row]) -> list[Row]:
    """Issue 17's must-show figures, as ratios of points measured side by side in this run."""
    predict64, predict1 = _point(http, "new", "predict json", 64), _point(http, "new", "predict json", 1)
    mc64, mc1 = _point(http, "new", "uncertainty T=100", 64), _point(http, "new", "uncertainty T=100", 1)
    lit64 = _point(http, "litserve", "predict json", 64)
    assert predict64 and predict1 and mc64 and mc1 and lit64, "a run measures every goal's points"
    goals = [
        _goal(
            "predict c=64 >= 3x LitServe req/s",
            paired_ratio(predict64, lit64, "req_per_s") >= 3,
            _vs(predict64, lit64, "req_per_s"),
        ),
        _goal(
            "uncertainty T=100 c=64 >= 0.9x predict req/s",
            paired_ratio(mc64, predict64, "req_per_s") >= 0.9,
            _vs(mc64, predict64, "req_per_s"),
        ),
        _goal(
            "uncertainty T=100 c=1 p50 <= 1.3x predict's",
            paired_ratio(mc1, predict1, "p50_us") <= 1.3,
            _vs(mc1, predict1, "p50_us"),
        ),
    ]
    for new in (r for r in http if r["server"] == "new"):
        old = _point(http, "old", new["load"], new["connections"])
        assert old, "a full run measures the old engine at every point of the new"
        goals.append(
            _goal(
                f"new vs old, {new['load']} c={new['connections']}: req/s >= 0.9x, p50 <= 1.1x",
                paired_ratio(new, old, "req_per_s") >= 0.9 and paired_ratio(new, old, "p50_us") <= 1.1,
                f"{_vs(new, old, 'req_per_s')}; p50 {_vs(new, old, 'p50_us')}",
            )
        )
    one_image = next(
        (r for r in sampler_rows if (r["architecture"], r["samples"], r["batch"]) == ("seed", 100, 1)), None
    )
    vs_replicate, vs_loop = (
        (one_image["speedup_vs_replicate"], one_image["speedup_vs_loop"]) if one_image else (0, 0)
    )
    goals.append(
        _goal(
            "sampler seed T=100 B=1: shared prefix >= 5x replicate and >= 20x loop",
            vs_replicate >= 5 and vs_loop >= 20,
            f"{vs_replicate:.1f}x replicate, {vs_loop:.1f}x loop" if one_image else "not measured",
        )
    )
    health = overloaded["healthz"]
    return [
        *goals,
        _flood_check(overloaded["wrk"]),
        # Answered, not fast: under a 512-connection flood a probe queues behind the flood's
        # requests in the kernel and on the event loop (the old engine: p99 ~250 ms).
        _goal("overload c=512: every /healthz probe answered", _all_answered(health), _health_detail(health)),
    ]


def check_smoke(http: list[Row], overloaded: Row) -> list[Row]:
    """Behaviour only: every load point answered 200s; under overload only 200s and 503s with
    Retry-After, and every /healthz probe answered."""
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
    health = overloaded["healthz"]
    return [
        *checks,
        _flood_check(overloaded["wrk"]),
        _goal("overload c=512: every /healthz probe answered", _all_answered(health), _health_detail(health)),
    ]


def _flood_check(flood: Row) -> Row:
    statuses = flood["statuses"]
    return _goal(
        "overload c=512: only 200 and 503 with Retry-After, some 200",
        set(statuses) <= {"200", "503"}
        and "200" in statuses
        and flood["retry_after_503"] == statuses.get("503", 0),
        f"statuses {statuses}, 503s with Retry-After {flood['retry_after_503']}, "
        f"socket errors {flood['socket_errors']}",
    )


def _all_answered(health: Row) -> bool:
    return health["probes"] > 0 and health["statuses"] == {"200": health["probes"]}


def _health_detail(health: Row) -> str:
    return (
        f"{health['probes']} probes, statuses {health['statuses']}, "
        f"p50 {health['p50_ms']:.1f} ms, p99 {health['p99_ms']:.1f} ms, max {health['max_ms']:.1f} ms"
    )


def _plots(results: Path, http: list[Row], sampler_rows: list[Row]) -> None:
    figure, (throughput, latency) = plt.subplots(1, 2, figsize=(11, 4))
    colors: dict[str, str] = {}  # one per load of the engines (old dashed, new solid), one per peer
    for server, load in dict.fromkeys((r["server"], r["load"]) for r in http):
        color = colors.setdefault(load if server in ("old", "new") else server, f"C{len(colors)}")
        rows = sorted(
            (r for r in http if r["server"] == server and r["load"] == load), key=lambda r: r["connections"]
        )
        c = [r["connections"] for r in rows]
        style = {"color": color, "linestyle": "--" if server == "old" else "-", "marker": "o"}
        style["label"] = f"{server}: {load}"
        throughput.plot(c, [r["req_per_s"] for r in rows], **style)
        latency.plot(c, [r["p50_us"] / 1e3 for r in rows], **style)
    for axis, title in ((throughput, "requests/s"), (latency, "p50 latency (ms)")):
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
        for method in ("shared_prefix", "replicate", "loop", "torch_last_layer"):
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


def results_markdown(results: Path, relative: str) -> list[str]:
    """The results section's lines; `relative` is the path from the document to `results`."""
    http: list[Row] = json.loads((results / "http.json").read_text())
    overloaded: Row = json.loads((results / "overload.json").read_text())
    sampler_rows: list[Row] = json.loads((results / "sampler.json").read_text())
    statistics_rows: list[Row] = json.loads((results / "statistics.json").read_text())
    summary: Row = json.loads((results / "summary.json").read_text())
    _plots(results, http, sampler_rows)
    environment, goals, checks = summary["environment"], summary["goals"], summary["checks"]
    failed = [c for c in checks if not c["ok"]]
    pairs = [(r, _point(http, "old", r["load"], r["connections"])) for r in http if r["server"] == "new"]
    flood, health = overloaded["wrk"], overloaded["healthz"]
    return [
        "### Results of the last run",
        "",
        "Environment: " + ", ".join(f"{k} {v}" for k, v in environment.items()),
        "",
        "A point is the median of its rounds; a ratio between two points is paired, the median of their "
        "ratios within each round.",
        "",
        "| goal | result | measured |",
        "| --- | --- | --- |",
        *(f"| {g['name']} | {'met' if g['ok'] else '**not met**'} | {g['detail']} |" for g in goals),
        "",
        f"Checks (every load point answered only 200s; under overload only 200s and 503s with Retry-After, "
        f"every /healthz probe answered): {len(checks) - len(failed)} of {len(checks)} passed"
        + "".join(f"; **failed**: {c['name']} ({c['detail']})" for c in failed)
        + ".",
        "",
        "#### Old engine against new",
        "",
        "| load | connections | old req/s | new req/s | new/old | old p50 ms | new p50 ms | new/old |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        *(
            f"| {new['load']} | {new['connections']} | {old['req_per_s']:.0f} | {new['req_per_s']:.0f} | "
            f"{paired_ratio(new, old, 'req_per_s'):.2f}x | {old['p50_us'] / 1e3:.2f} | "
            f"{new['p50_us'] / 1e3:.2f} | {paired_ratio(new, old, 'p50_us'):.2f}x |"
            for new, old in pairs
            if old is not None
        ),
        "",
        "#### Every point",
        "",
        "| server | load | connections | req/s | p50 ms | p99 ms | statuses |",
        "| --- | --- | ---: | ---: | ---: | ---: | --- |",
        *(
            f"| {r['server']} | {r['load']} | {r['connections']} | {r['req_per_s']:.0f} | "
            f"{r['p50_us'] / 1e3:.2f} | {r['p99_us'] / 1e3:.2f} | {r['statuses']} |"
            for r in http
        ),
        "",
        f"![HTTP load]({relative}/http.png)",
        "",
        "#### Overload (512 connections, predict json, new engine)",
        "",
        f"- wrk: {flood['req_per_s']:.0f} answers/s, statuses {flood['statuses']}, 503s carrying "
        f"Retry-After {flood['retry_after_503']}, socket errors {flood['socket_errors']}",
        f"- GET /healthz on a fresh connection every 20 ms meanwhile: {_health_detail(health)}",
        "",
        "#### MC sampler in process (B images per call, one torch thread, median ms per call)",
        "",
        "| architecture | B | T | shared prefix | replicate (baal style) | loop | torch last layer "
        "| vs replicate | vs loop | vs torch last layer |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        *(
            f"| {r['architecture']} | {r['batch']} | {r['samples']} | "
            f"{r['seconds']['shared_prefix'] * 1e3:.3f} | "
            f"{r['seconds']['replicate'] * 1e3:.3f} | {r['seconds']['loop'] * 1e3:.3f} | "
            f"{r['seconds']['torch_last_layer'] * 1e3:.3f} | "
            f"{r['speedup_vs_replicate']:.1f}x | {r['speedup_vs_loop']:.1f}x | "
            f"{r['speedup_vs_torch_last_layer']:.1f}x |"
            for r in sampler_rows
        ),
        "",
        f"![MC sampler]({relative}/sampler.png)",
        "",
        "#### Statistics of the passes in process (C = 10 classes, median us per call)",
        "",
        "The compiled kernel (`models/_kernels.c`, what the service and training call) against the same "
        "statistics in vectorized numpy (`bench/statistics_kernel.py`).",
        "",
        "| B | T | compiled | numpy | numpy/compiled |",
        "| ---: | ---: | ---: | ---: | ---: |",
        *(
            f"| {r['batch']} | {r['samples']} | {r['seconds']['compiled'] * 1e6:.1f} | "
            f"{r['seconds']['numpy'] * 1e6:.1f} | {r['speedup_vs_numpy']:.1f}x |"
            for r in statistics_rows
        ),
    ]


def write_results(doc: Path, results: Path) -> None:
    """Replace what lies between the BEGIN and END markers of `doc`; the rest is written by hand."""
    text = doc.read_text()
    head, begin, rest = text.partition(BEGIN)
    _, end, tail = rest.partition(END)
    if not begin or not end:
        raise RuntimeError(f"{doc} lacks the markers of its results section:\n{BEGIN}\n{END}")
    lines = results_markdown(results, os.path.relpath(results.resolve(), doc.resolve().parent))
    doc.write_text(head + BEGIN + "\n" + "\n".join(lines) + "\n" + END + tail)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--doc", type=Path, default=DOC)
    args = parser.parse_args()
    write_results(args.doc, args.results)


if __name__ == "__main__":
    main()
