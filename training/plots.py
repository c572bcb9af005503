"""Model-card plots as PNG bytes, drawn from the metrics.json content alone (Agg, no display).

Each function builds a `matplotlib.figure.Figure` directly, so no pyplot global state is touched.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

DPI = 90


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    return buffer.getvalue()


def training_curves(history: Sequence[Mapping[str, float]]) -> bytes:
    """Loss and accuracy per epoch, train (with dropout active) vs validation (eval mode)."""
    epochs = [h["epoch"] for h in history]
    figure = Figure(figsize=(9, 3.4), layout="constrained")
    loss_axes, accuracy_axes = figure.subplots(1, 2)
    loss_axes.plot(epochs, [h["train_loss"] for h in history], label="train (dropout on)")
    loss_axes.plot(epochs, [h["val_loss"] for h in history], label="validation")
    loss_axes.set(xlabel="epoch", ylabel="cross-entropy (nats)", yscale="log", title="Loss")
    accuracy_axes.plot(epochs, [100 * (1 - h["train_accuracy"]) for h in history], label="train")
    accuracy_axes.plot(epochs, [100 * (1 - h["val_accuracy"]) for h in history], label="validation")
    accuracy_axes.set(xlabel="epoch", ylabel="error (%)", yscale="log", title="Error")
    for axes in (loss_axes, accuracy_axes):
        axes.grid(alpha=0.3, which="both")
        axes.legend()
    return _png(figure)


def reliability_diagram(
    reliability: Mapping[str, Any], test: Mapping[str, Any], calibrated: Mapping[str, Any] | None = None
) -> bytes:
    """Accuracy vs confidence per bin, deterministic net vs MC mean (and, with `calibrated`, the
    temperature-scaled MC mean), with each one's ECE."""
    samples = test["mc_samples"]
    panels = [
        ("deterministic", f"Deterministic (ECE {100 * test['deterministic']['ece']:.2f}%)"),
        ("mc", f"MC dropout, T={samples} (ECE {100 * test[f'mc_t{samples}']['ece']:.2f}%)"),
    ]
    if calibrated is not None:
        reliability = {**reliability, "calibrated": calibrated["reliability"]}
        after = calibrated["test"]["after"]["ece"]
        panels.append(
            ("calibrated", f"MC, temperature {calibrated['temperature']:.3f} (ECE {100 * after:.2f}%)")
        )
    figure = Figure(figsize=(4.5 * len(panels), 4), layout="constrained")
    for axes, (key, title) in zip(figure.subplots(1, len(panels), sharey=True), panels, strict=True):
        bins = reliability[key]
        centres = [(b["lower"] + b["upper"]) / 2 for b in bins]
        width = bins[0]["upper"] - bins[0]["lower"]
        accuracy = np.array([b["accuracy"] for b in bins])  # 0 for empty bins
        confidence = np.array([b["confidence"] for b in bins])
        axes.bar(centres, accuracy, width=width, edgecolor="black", alpha=0.7, label="accuracy")
        axes.bar(
            centres,
            confidence - accuracy,
            bottom=accuracy,
            width=width,
            color="red",
            alpha=0.25,
            label="gap to confidence",
        )
        axes.plot([0, 1], [0, 1], "k--", linewidth=1, label="perfect calibration")
        for centre, b in zip(centres, bins, strict=True):
            if b["count"]:
                axes.annotate(str(b["count"]), (centre, 0.02), ha="center", fontsize=6, rotation=90)
        axes.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence", title=title)
        axes.legend(loc="upper left", fontsize=8)
    figure.axes[0].set_ylabel("accuracy")
    return _png(figure)


def ood_histograms(ood: Mapping[str, Any], in_name: str, out_name: str) -> bytes:
    """Densities of predictive entropy and mutual information, in vs out of distribution."""
    titles = {
        "predictive_entropy": "Predictive entropy (nats)",
        "mutual_information": "Mutual information (nats)",
    }
    figure = Figure(figsize=(9, 3.4), layout="constrained")
    for axes, (key, title) in zip(figure.subplots(1, 2), titles.items(), strict=True):
        histogram = ood["histograms"][key]
        edges = np.array(histogram["edges"])
        for side, label in (("in", f"{in_name} test (in)"), ("out", f"{out_name} test (out)")):
            counts = np.array(histogram[side])
            axes.stairs(counts / max(1.0, counts.sum()), edges, fill=True, alpha=0.5, label=label)
        auroc = ood["scores"][key]["auroc"]
        axes.set(title=f"{title}: AUROC {auroc:.3f}", xlabel="nats", ylabel="share of inputs", yscale="log")
        if key == "mutual_information" and "threshold" in ood:
            axes.axvline(
                ood["threshold"]["mutual_information"], color="black", linestyle="--", label="OOD threshold"
            )
        axes.legend(fontsize=8)
    return _png(figure)


def rotation_plot(rotation: Mapping[str, Any], thumbnails: np.ndarray | None = None) -> bytes:
    """Gal & Ghahramani's rotated digit: label, confidence and uncertainty per angle; the mean
    over a population of rotated test digits beside it. thumbnails (A, 28, 28) optional."""
    angles = rotation["angles"]
    digit, crowd = rotation["digit"], rotation["population"]
    rows = 3 if thumbnails is not None else 2
    figure = Figure(figsize=(9, 3.0 * rows - (1.6 if thumbnails is not None else 0)), layout="constrained")
    grid = figure.add_gridspec(rows, 1, height_ratios=[0.6, 1, 1][-rows:])
    if thumbnails is not None:
        strip = figure.add_subplot(grid[0])
        strip.imshow(np.concatenate(list(thumbnails), axis=1), cmap="gray")
        strip.set_axis_off()
        strip.set_title(
            f"test digit #{digit['test_index']} (a {digit['true_label']}) rotated to {angles[-1]:.0f}°"
        )
    axes = figure.add_subplot(grid[-2])
    axes.plot(angles, digit["predictive_entropy"], "o-", label="predictive entropy")
    axes.plot(angles, digit["mutual_information"], "s-", label="mutual information")
    axes.plot(angles, digit["confidence"], "^--", label="confidence of MC mean")
    for angle, label, confidence in zip(angles, digit["label"], digit["confidence"], strict=True):
        axes.annotate(str(label), (angle, confidence), textcoords="offset points", xytext=(0, 6), ha="center")
    axes.set(ylabel="nats / probability", title="One digit (numbers: predicted label)")
    axes.tick_params(labelbottom=False)
    axes.legend(fontsize=8, loc="center left")
    axes.grid(alpha=0.3)
    population = figure.add_subplot(grid[-1], sharex=axes)
    population.plot(angles, crowd["mean_predictive_entropy"], "o-", label="mean predictive entropy")
    population.plot(angles, crowd["mean_mutual_information"], "s-", label="mean mutual information")
    population.plot(angles, crowd["accuracy"], "^--", label="accuracy")
    population.set(
        xlabel="rotation (degrees)", title=f"First {crowd['n']} test digits", ylabel="nats / share"
    )
    population.legend(fontsize=8, loc="center left")
    population.grid(alpha=0.3)
    return _png(figure)


def _miscoverage(values: Sequence[float]) -> np.ndarray:
    """1 - coverage, floored for a log axis (a level covered perfectly sits on the floor)."""
    return np.maximum(1.0 - np.asarray(values), 1e-4)


def conformal_plot(conformal: Mapping[str, Any]) -> bytes:
    """Prediction sets on the test set: miscoverage against its target per level (under the
    diagonal = guarantee met; bars 3 standard errors), mean set size per level, and coverage by
    true class at 99% (or the highest level below it)."""
    levels = conformal["levels"]
    targets = np.array([level["coverage"] for level in levels])
    figure = Figure(figsize=(13, 3.8), layout="constrained")
    miss_axes, size_axes, class_axes = figure.subplots(1, 3)
    alphas = 1.0 - targets
    miss_axes.plot(alphas, alphas, "k--", linewidth=1, label="target")
    for name, pick in (("RAPS (served)", lambda lv: lv["test"]), ("APS", lambda lv: lv["aps"]["test"])):
        coverage = [pick(level)["coverage"] for level in levels]
        errors = [3 * pick(level)["standard_error"] for level in levels]
        miss_axes.errorbar(alphas, _miscoverage(coverage), yerr=errors, marker="o", capsize=3, label=name)
    miss_axes.set(
        xscale="log",
        yscale="log",
        xlabel="target miscoverage (1 - level)",
        ylabel="test miscoverage",
        title=f"Coverage, {conformal['test_n']:,} test inputs",
    )
    positions = np.arange(len(levels))
    labels = [f"{100 * t:g}%" for t in targets]
    size_axes.bar(positions - 0.2, [lv["test"]["mean_size"] for lv in levels], 0.4, label="RAPS (served)")
    size_axes.bar(positions + 0.2, [lv["aps"]["test"]["mean_size"] for lv in levels], 0.4, label="APS")
    size_axes.set(
        xticks=positions, xticklabels=labels, xlabel="level", ylabel="mean set size", title="Set size"
    )
    by_class = conformal["by_class"]
    key = max((k for k in by_class["coverage"] if float(k) <= 0.99), key=float, default=None) or next(
        iter(by_class["coverage"])
    )
    classes = np.arange(len(by_class["classes"]))
    class_axes.bar(classes, [100 * c for c in by_class["coverage"][key]])
    class_axes.axhline(100 * float(key), color="black", linestyle="--", linewidth=1, label="target")
    low = min(100 * min(by_class["coverage"][key]), 100 * float(key)) - 1
    class_axes.set(
        ylim=(low, 100.2),
        xticks=classes,
        xticklabels=by_class["classes"],
        xlabel="true class",
        ylabel="coverage (%)",
        title=f"Coverage by class at {100 * float(key):g}%",
    )
    for axes in (miss_axes, size_axes, class_axes):
        axes.grid(alpha=0.3, which="both")
        axes.legend(fontsize=8)
    return _png(figure)


def risk_coverage_plot(abstention: Mapping[str, Any]) -> bytes:
    """Selective risk against the share of test inputs answered, per uncertainty score; the
    abstention policy's target and where its validation threshold lands on the test set."""
    curve, policy, test = abstention["curve"], abstention["policy"], abstention["test"]
    figure = Figure(figsize=(6.5, 4), layout="constrained")
    axes = figure.subplots()
    coverage = 100 * np.asarray(curve["coverage"])
    for name, risk in curve["risk"].items():
        axes.plot(coverage, 100 * np.asarray(risk), label=name.replace("_", " "))
    axes.axhline(100 * policy["target_risk"], color="black", linestyle="--", linewidth=1, label="target risk")
    axes.plot(
        [100 * test["accepted"]],
        [100 * test["risk"]],
        "k*",
        markersize=12,
        label=f"policy ({policy['score'].replace('_', ' ')} <= {policy['threshold'] or 0:.3g})",
    )
    axes.set(
        xlabel="inputs answered (%)",
        ylabel="error among answered (%)",
        title="Selective risk vs coverage (test set)",
    )
    axes.grid(alpha=0.3, which="both")
    axes.legend(fontsize=8)
    return _png(figure)


def shift_plot(shift: Mapping[str, Any]) -> bytes:
    """Rotated test digits: coverage per level and accuracy against the angle; set size, OOD and
    abstention rates against the angle, with the partner dataset's rates beside them."""
    rotation = shift["rotation"]
    angles = rotation["angles"]
    figure = Figure(figsize=(12, 4), layout="constrained")
    coverage_axes, size_axes = figure.subplots(1, 2)
    for key, values in rotation["coverage"].items():
        coverage_axes.plot(
            angles, 100 * np.asarray(values), "o-", markersize=3, label=f"coverage at {100 * float(key):g}%"
        )
    coverage_axes.plot(angles, 100 * np.asarray(rotation["accuracy"]), "k^--", label="accuracy")
    coverage_axes.set(
        xlabel="rotation (degrees)",
        ylabel="%",
        title=f"First {rotation['n']:,} test digits, rotated",
        ylim=(0, 101),
    )
    for key, values in rotation["mean_size"].items():
        size_axes.plot(angles, values, "o-", markersize=3, label=f"set size at {100 * float(key):g}%")
    size_axes.set(xlabel="rotation (degrees)", ylabel="mean set size", title="Set size, OOD and abstention")
    rates = size_axes.twinx()
    rates.plot(angles, 100 * np.asarray(rotation["ood_rate"]), "k--", label="ood flagged")
    rates.plot(angles, 100 * np.asarray(rotation["abstain_rate"]), "k:", label="abstain")
    partner = shift.get("partner")
    if partner is not None:
        rates.axhline(
            100 * partner["ood_rate"],
            color="red",
            linestyle="--",
            linewidth=1,
            label=f"ood, {partner['dataset']}",
        )
    rates.set(ylabel="% of inputs", ylim=(0, 101))
    coverage_axes.grid(alpha=0.3)
    size_axes.grid(alpha=0.3)
    coverage_axes.legend(fontsize=7, loc="lower left")
    handles = size_axes.get_legend_handles_labels()
    more = rates.get_legend_handles_labels()
    size_axes.legend(handles[0] + more[0], handles[1] + more[1], fontsize=7, loc="upper left")
    return _png(figure)
