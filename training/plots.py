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


def reliability_diagram(reliability: Mapping[str, Any], test: Mapping[str, Any]) -> bytes:
    """Accuracy vs confidence per bin, deterministic net vs MC mean, with each one's ECE."""
    samples = test["mc_samples"]
    panels = (
        ("deterministic", f"Deterministic (ECE {100 * test['deterministic']['ece']:.2f}%)"),
        ("mc", f"MC dropout, T={samples} (ECE {100 * test[f'mc_t{samples}']['ece']:.2f}%)"),
    )
    figure = Figure(figsize=(9, 4), layout="constrained")
    for axes, (key, title) in zip(figure.subplots(1, 2, sharey=True), panels, strict=True):
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
