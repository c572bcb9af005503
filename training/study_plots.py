"""The dropout study's figures as PNG bytes, drawn from its summary and history rows alone (Agg,
no pyplot state). Error bars and bands: the spread over seeds (std in summaries, min..max in curves)."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

Row = Mapping[str, Any]

FIGURES = {
    "generalization gap vs dropout rate": "gap_vs_rate.png",
    "small split: learning curves with and without dropout": "curves_small_split.png",
    "OOD AUROC, ECE and mutual information vs dropout rate": "uncertainty_vs_rate.png",
    "L2 and the other penalties vs dropout at matched test error": "l2_vs_dropout.png",
}
CURVE_VARIANTS = ("dropout 0.0", "dropout 0.5")
DPI = 90


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    return buffer.getvalue()


def _stat(rows: Sequence[Row], column: str, scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """(mean, std) of a summary column over rows; a missing std (one seed) draws no bar."""
    mean = np.array([row[f"{column}_mean"] for row in rows], dtype=float)
    std = np.nan_to_num(np.array([row[f"{column}_std"] for row in rows], dtype=float))
    if column.endswith("test_accuracy"):  # plotted as error
        mean = 1.0 - mean
    return scale * mean, scale * std


def _family(summary: Sequence[Row], split: str, family: str) -> list[Row]:
    return [row for row in summary if row["split"] == split and row["family"] == family]


def _versus_rate(
    axes: Axes, summary: Sequence[Row], split: str, column: str, scale: float, label: str, **style: Any
) -> None:
    """One column against the hidden dropout rate, and the input-dropout variant as a star at its
    hidden rate, in the same colour."""
    rows = _family(summary, split, "dropout")
    rate = np.array([row["hidden_dropout"] for row in rows], dtype=float)
    mean, std = _stat(rows, column, scale)
    line = axes.errorbar(rate, mean, yerr=std, marker="o", capsize=3, label=label, **style)
    colour = line.lines[0].get_color()
    extra = _family(summary, split, "input dropout")
    if extra:
        mean, std = _stat(extra, column, scale)
        x = [row["hidden_dropout"] for row in extra]
        axes.errorbar(x, mean, yerr=std, marker="*", markersize=11, color=colour, linestyle="none")


def generalization_gap(summary: Sequence[Row], splits: Sequence[str]) -> bytes:
    """Per split: train - test accuracy, test - train loss and test error against the rate."""
    panels = (
        ("accuracy_gap", 100.0, "train − test accuracy (%)"),
        ("loss_gap", 1.0, "test − train NLL (nats)"),
        ("test_accuracy", 100.0, "test error (%)"),
    )
    figure = Figure(figsize=(12, 3.2 * len(splits)), layout="constrained")
    grid = figure.subplots(len(splits), len(panels), squeeze=False)
    for row_axes, split in zip(grid, splits, strict=True):
        for axes, (column, scale, ylabel) in zip(row_axes, panels, strict=True):
            _versus_rate(axes, summary, split, column, scale, "hidden dropout")
            axes.set(xlabel="hidden dropout rate", ylabel=ylabel, title=f"{split} split")
            axes.grid(alpha=0.3)
    grid[0][0].legend(["hidden dropout (★: + input dropout 0.2)"], fontsize=8)
    return _png(figure)


def learning_curves(history: Sequence[Row], split: str = "small") -> bytes:
    """Loss and error per epoch with and without dropout, train dashed (measured with dropout on, as
    the loop reports it) and validation solid: mean over seeds, band min..max."""
    figure = Figure(figsize=(11, 3.8), layout="constrained")
    loss_axes, error_axes = figure.subplots(1, 2)
    for colour, variant in zip(("tab:red", "tab:blue"), CURVE_VARIANTS, strict=True):
        rows = [h for h in history if h["split"] == split and h["variant"] == variant]
        if not rows:
            continue
        epochs = sorted({int(h["epoch"]) for h in rows})
        for phase, style in (("train", "--"), ("val", "-")):
            for axes, key, scale, offset in (
                (loss_axes, f"{phase}_loss", 1.0, 0.0),
                (error_axes, f"{phase}_accuracy", -100.0, 100.0),  # error % = 100 - 100 * accuracy
            ):
                per_epoch = offset + scale * np.array(
                    [[float(h[key]) for h in rows if int(h["epoch"]) == e] for e in epochs]
                )  # (epochs, seeds)
                label = f"{variant}, {'train (dropout on)' if phase == 'train' else 'validation'}"
                axes.plot(epochs, per_epoch.mean(1), style, color=colour, label=label)
                axes.fill_between(epochs, per_epoch.min(1), per_epoch.max(1), color=colour, alpha=0.2, lw=0)
    loss_axes.set(xlabel="epoch", ylabel="cross-entropy (nats)", yscale="log", title=f"{split} split: loss")
    error_axes.set(xlabel="epoch", ylabel="error (%)", ylim=(0, None), title=f"{split} split: error")
    for axes in (loss_axes, error_axes):
        axes.grid(alpha=0.3, which="both")
        axes.legend(fontsize=7)
    return _png(figure)


def uncertainty_vs_rate(summary: Sequence[Row], splits: Sequence[str]) -> bytes:
    """OOD AUROC (MC mutual information vs the deterministic max probability), ECE (deterministic
    vs MC mean) and mean MI in and out of distribution, against the rate."""
    figure = Figure(figsize=(13, 3.6), layout="constrained")
    auroc_axes, ece_axes, mi_axes = figure.subplots(1, 3)
    for split in splits:
        for axes, column, scale, label, style in (
            (auroc_axes, "ood_auroc_mutual_information", 1.0, "MC mutual information", "-"),
            (auroc_axes, "ood_auroc_max_probability", 1.0, "deterministic max prob.", ":"),
            (ece_axes, "test_ece", 100.0, "deterministic", ":"),
            (ece_axes, "mc_test_ece", 100.0, "MC mean", "-"),
            (mi_axes, "mean_mi_in", 1.0, "MNIST test (in)", ":"),
            (mi_axes, "mean_mi_out", 1.0, "Fashion-MNIST (out)", "-"),
        ):
            _versus_rate(axes, summary, split, column, scale, f"{split}: {label}", linestyle=style)
    auroc_axes.set(ylabel="AUROC, MNIST vs Fashion-MNIST", title="OOD detection")
    ece_axes.set(ylabel="ECE, 15 bins (%)", title="Calibration on MNIST test")
    mi_axes.set(ylabel="mean mutual information (nats)", title="Epistemic uncertainty")
    for axes in (auroc_axes, ece_axes, mi_axes):
        axes.set_xlabel("hidden dropout rate (★: + input dropout 0.2)")
        axes.grid(alpha=0.3)
        axes.legend(fontsize=7)
    return _png(figure)


def penalties_vs_dropout(summary: Sequence[Row], splits: Sequence[str]) -> bytes:
    """Test NLL and ECE against test error, per split, each variant one point (the deterministic net;
    for dropout also its MC mean, hollow): where a penalty and a dropout rate reach the same error,
    which one is better calibrated."""
    styles = {  # family: (marker, colour)
        "dropout": ("o", "tab:blue"),
        "input dropout": ("*", "tab:orange"),
        "L2": ("s", "tab:green"),
        "L1": ("D", "tab:red"),
        "max-norm": ("^", "tab:purple"),
    }
    figure = Figure(figsize=(5.5 * len(splits), 8), layout="constrained")
    grid = figure.subplots(2, len(splits), squeeze=False)
    for column_index, split in enumerate(splits):
        for axes, column, scale, ylabel in (
            (grid[0][column_index], "test_loss", 1.0, "test NLL (nats)"),
            (grid[1][column_index], "test_ece", 100.0, "test ECE (%)"),
        ):
            for family, (marker, colour) in styles.items():
                rows = _family(summary, split, family)
                if not rows:
                    continue
                x, x_std = _stat(rows, "test_accuracy", 100.0)
                y, y_std = _stat(rows, column, scale)
                style = "-" if family in ("dropout", "L2") else "none"
                axes.errorbar(
                    x, y, xerr=x_std, yerr=y_std, marker=marker, color=colour, linestyle=style, label=family
                )
                for row, xi, yi in zip(rows, x, y, strict=True):
                    short = row["variant"].removeprefix(family).strip() or row["variant"]
                    axes.annotate(short, (xi, yi), textcoords="offset points", xytext=(4, 4), fontsize=7)
            rows = _family(summary, split, "dropout")
            x, x_std = _stat(rows, "mc_test_accuracy", 100.0)
            y, y_std = _stat(rows, f"mc_{column}", scale)
            axes.errorbar(
                x,
                y,
                xerr=x_std,
                yerr=y_std,
                marker="o",
                mfc="none",
                color="tab:blue",
                linestyle="--",
                label="dropout, MC mean",
            )
            axes.set(xlabel="test error (%)", ylabel=ylabel, title=f"{split} split")
            axes.grid(alpha=0.3)
            axes.legend(fontsize=8)
    return _png(figure)


def draw(summary: Sequence[Row], history: Sequence[Row], splits: Sequence[str]) -> dict[str, bytes]:
    """Every figure, keyed as FIGURES."""
    names = list(FIGURES)
    return {
        names[0]: generalization_gap(summary, splits),
        names[1]: learning_curves(history),
        names[2]: uncertainty_vs_rate(summary, splits),
        names[3]: penalties_vs_dropout(summary, splits),
    }
