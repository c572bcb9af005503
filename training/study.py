"""The dropout study (issue 22): what dropout buys the seed architecture (784-128-10) against its
rate, L2, L1 and max-norm, on the full training split and on a small one where overfitting shows.

A driver over the training job's pieces, not a second training loop: every run is the job's tensors
through `training.loop.train`, then the evaluation functions the model card uses: deterministic test
metrics for every run; for runs with dropout, MC dropout (T passes) on a test subset, OOD detection
against Fashion-MNIST and the rotated digit.

Runs go to a pool of single-threaded worker processes. A 784-128-10 step is too small for a second
thread to help: on 2 cores one thread per run trained an epoch as fast as two at best, and two were up
to 12x slower whenever the other core was busy; two one-thread runs side by side each kept full speed.

Outputs, in one folder: runs.csv (a row per run), history.csv (a row per epoch), summary.csv and
results.md (mean and spread over seeds), and the figures drawn by `training.study_plots`.
"""

from __future__ import annotations

import argparse
import csv
import math
import multiprocessing
import os
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from models.network import DropoutMLP
from models.spec import MLPSpec, Normalization
from training import study_plots
from training.datasets import load_dataset
from training.evaluate import calibrate_ood_threshold, evaluate, mc_summaries, predict_deterministic
from training.job import git_commit, to_tensors
from training.loop import EpochStats, evaluate_loss, train
from training.metrics import classification_metrics
from training.ood import detection_metrics, ood_evaluation
from training.recipes import RECIPES, Recipe
from training.rotation import rotation_experiment

Row = dict[str, Any]


@dataclass(frozen=True)
class Variant:
    """One regularizer setting of the seed architecture; everything else is the seed recipe."""

    name: str
    family: str  # dropout, input dropout, L2, L1, max-norm: a line or marker in the plots
    hidden_dropout: float = 0.0
    input_dropout: float = 0.0
    weight_decay: float = 0.0
    l1: float = 0.0
    max_norm: float | None = None

    def recipe(self, epochs: int) -> Recipe:
        spec = MLPSpec(
            hidden_sizes=(128,),
            input_dropout=self.input_dropout,
            hidden_dropout=self.hidden_dropout,
            max_norm=self.max_norm,
        )
        return RECIPES["seed"].with_overrides(
            name=f"study: {self.name}", spec=spec, epochs=epochs, weight_decay=self.weight_decay, l1=self.l1
        )

    @property
    def has_dropout(self) -> bool:
        return self.hidden_dropout > 0 or self.input_dropout > 0


VARIANTS: tuple[Variant, ...] = (
    *(Variant(f"dropout {rate}", "dropout", hidden_dropout=rate) for rate in (0.0, 0.1, 0.2, 0.3, 0.5, 0.7)),
    # Srivastava et al. 2014's input dropout, beside the hidden 0.5 above.
    Variant("input 0.2 + dropout 0.5", "input dropout", hidden_dropout=0.5, input_dropout=0.2),
    *(Variant(f"L2 {wd:.0e}", "L2", weight_decay=wd) for wd in (1e-5, 1e-4, 1e-3)),
    # 1e-4, of 1e-5 and 1e-4: the lower validation loss on the small split in a one-seed trial
    # (best 0.269 against 0.297).
    Variant("L1 1e-04", "L1", l1=1e-4),
    # Not the paper's c = 3: under Adam at lr 1e-3 the largest unit norm stays near 2 on the small split
    # and reaches ~4 on the full one (max_weight_norm in runs.csv), so c = 3 would not act on the
    # small split at all. c = 1 binds on both.
    Variant("max-norm 1", "max-norm", max_norm=1.0),
)


@dataclass(frozen=True)
class Split:
    name: str
    train_size: int  # the first N of the job's 50k training images
    epochs: int


@dataclass(frozen=True)
class StudyConfig:
    # 20 epochs on 50k: 4x the seed recipe, enough for the undropped net to overfit; ~2 s an epoch
    # on one core. 100 epochs of 2k images: 3,200 steps, the undropped net fits it within 20 epochs.
    splits: tuple[Split, ...] = (Split("full", 50_000, 20), Split("small", 2_000, 100))
    seeds: tuple[int, ...] = (0, 1, 2)
    variants: tuple[Variant, ...] = VARIANTS
    validation_size: int = 10_000  # the job's held-out split, evaluated after every epoch
    mc_samples: int = 100
    # MC statistics on (an evenly strided subset of) this many test, Fashion-MNIST test and validation
    # images: all of them, ~3 s a run on one core (15 s with input dropout, which has no shared
    # prefix). Not the first N: MNIST's first test images are harder (a small-split net scored 88% on
    # the first 2,000, 95% on the last), so MC and deterministic figures would not compare.
    mc_inputs: int = 10_000
    rotation_population: int = 200
    workers: int = 2


QUICK = StudyConfig(
    splits=(Split("full", 1_000, 1), Split("small", 200, 2)),
    seeds=(0, 1),
    validation_size=500,
    mc_samples=10,
    mc_inputs=200,
    rotation_population=20,
)


@dataclass(frozen=True)
class StudyData:
    """The job's tensors: 50k train / 10k validation from MNIST's 60k, its test set, and the
    Fashion-MNIST test set as the out-of-distribution inputs. (N, 784) floats in [0, 1]."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    x_ood: torch.Tensor


@cache
def study_data() -> StudyData:
    """Loaded once per process (each worker keeps its copy for all of its runs)."""
    mnist, fashion = load_dataset("mnist"), load_dataset("fashion-mnist")
    x_all, y_all = to_tensors(mnist.x_train, mnist.y_train, "cpu")
    validation = RECIPES["seed"].validation_size
    x_test, y_test = to_tensors(mnist.x_test, mnist.y_test, "cpu")
    x_ood, _ = to_tensors(fashion.x_test, fashion.y_test, "cpu")
    return StudyData(
        x_all[:-validation],
        y_all[:-validation],
        x_all[-validation:],
        y_all[-validation:],
        x_test,
        y_test,
        x_ood,
    )


@dataclass(frozen=True)
class RunSpec:
    variant: Variant
    split: Split
    seed: int
    config: StudyConfig = field(repr=False)


@dataclass
class RunResult:
    row: Row  # one line of runs.csv
    history: list[Row]  # its lines of history.csv


def run_one(spec: RunSpec) -> RunResult:
    """Train one variant on one split with one seed, then measure it."""
    torch.set_num_threads(1)
    config, data = spec.config, study_data()
    recipe = spec.variant.recipe(spec.split.epochs)
    x_train, y_train = data.x_train[: spec.split.train_size], data.y_train[: spec.split.train_size]
    x_val, y_val = data.x_val[: config.validation_size], data.y_val[: config.validation_size]
    torch.manual_seed(spec.seed)  # initial weights and training-time dropout masks
    model = DropoutMLP(recipe.spec, Normalization())  # MNIST's statistics on both splits
    started = time.perf_counter()
    history = train(model, recipe, x_train, y_train, x_val, y_val, spec.seed, progress=False)
    train_seconds = time.perf_counter() - started

    train_loss, train_accuracy = evaluate_loss(model, x_train, y_train)  # eval mode, as test
    probs_in = predict_deterministic(model, data.x_test)  # (N, C)
    probs_out = predict_deterministic(model, data.x_ood)
    test = classification_metrics(probs_in, data.y_test)
    row: Row = {
        "split": spec.split.name,
        "variant": spec.variant.name,
        "family": spec.variant.family,
        "seed": spec.seed,
        "train_size": len(x_train),
        "epochs": recipe.epochs,
        "hidden_dropout": spec.variant.hidden_dropout,
        "input_dropout": spec.variant.input_dropout,
        "weight_decay": spec.variant.weight_decay,
        "l1": spec.variant.l1,
        "max_norm": spec.variant.max_norm or math.nan,
        "train_seconds": train_seconds,
        "train_loss": train_loss,
        "train_accuracy": train_accuracy,
        "val_loss": history[-1].val_loss,
        "val_accuracy": history[-1].val_accuracy,
        "test_loss": test["nll"],
        "test_accuracy": test["accuracy"],
        "test_ece": test["ece"],
        "accuracy_gap": train_accuracy - test["accuracy"],
        "loss_gap": test["nll"] - train_loss,
        "max_weight_norm": max(
            layer.weight.norm(dim=1).max().item() for layer in (*model.hidden, model.output)
        ),
        "ood_auroc_max_probability": detection_metrics(-probs_in.max(-1).values, -probs_out.max(-1).values)[
            "auroc"
        ],
        **(mc_measures(model, data, config, spec.seed) if spec.variant.has_dropout else MC_MISSING),
        "eval_seconds": time.perf_counter() - started - train_seconds,
    }
    key = {"split": spec.split.name, "variant": spec.variant.name, "seed": spec.seed}
    return RunResult(row, [key | h.to_dict() for h in history])


MC_COLUMNS = (
    "mc_test_accuracy",
    "mc_test_loss",
    "mc_test_ece",
    "ood_auroc_mutual_information",
    "ood_flagged_out",
    "mean_mi_in",
    "mean_mi_out",
    "rotation_peak_mi",
    "rotation_peak_angle",
    "rotation_peak_mean_mi",
)
MC_MISSING: Row = dict.fromkeys(MC_COLUMNS, math.nan)


def strided(x: torch.Tensor, count: int) -> torch.Tensor:
    """`count` rows spread evenly over x (every row when count >= len(x))."""
    return x[:: max(1, len(x) // count)][:count]


def mc_measures(model: DropoutMLP, data: StudyData, config: StudyConfig, seed: int) -> Row:
    """MC-dropout figures: the MC mean on the test subset, OOD against Fashion-MNIST at the
    validation-calibrated MI threshold (as the service flags), and the rotated digit's peak MI."""
    samples = config.mc_samples
    x_test, y_test = strided(data.x_test, config.mc_inputs), strided(data.y_test, config.mc_inputs)
    x_ood, x_val = strided(data.x_ood, config.mc_inputs), strided(data.x_val, config.mc_inputs)
    test = evaluate(model, x_test, y_test, samples=samples, seed=seed, grid=(samples,))
    threshold = calibrate_ood_threshold(model, x_val, samples=samples, seed=seed)
    out = mc_summaries(model, x_ood, samples, seed + 1)  # its own passes, as the job does
    ood = ood_evaluation(
        test.summary, test.deterministic, out, predict_deterministic(model, x_ood), threshold
    )
    rotation = rotation_experiment(
        model, data.x_test, data.y_test, population=config.rotation_population, samples=samples, seed=seed + 2
    )
    digit_mi = rotation["digit"]["mutual_information"]
    peak = max(range(len(digit_mi)), key=digit_mi.__getitem__)
    mc = test.metrics[f"mc_t{samples}"]
    return {
        "mc_test_accuracy": mc["accuracy"],
        "mc_test_loss": mc["nll"],
        "mc_test_ece": mc["ece"],
        "ood_auroc_mutual_information": ood["scores"]["mutual_information"]["auroc"],
        "ood_flagged_out": ood["threshold"]["flagged_out"],
        "mean_mi_in": float(test.summary.mutual_information.mean()),
        "mean_mi_out": float(out.mutual_information.mean()),
        "rotation_peak_mi": digit_mi[peak],
        "rotation_peak_angle": rotation["angles"][peak],
        "rotation_peak_mean_mi": max(rotation["population"]["mean_mutual_information"]),
    }


KEY_COLUMNS = (  # one value per split and variant
    *("split", "variant", "family", "train_size", "epochs"),
    *("hidden_dropout", "input_dropout", "weight_decay", "l1", "max_norm"),
)
MEASURED = (  # per run; summarized as mean and spread over seeds
    *("train_seconds", "eval_seconds", "train_loss", "train_accuracy", "val_loss", "val_accuracy"),
    *("test_loss", "test_accuracy", "test_ece", "accuracy_gap", "loss_gap", "max_weight_norm"),
    "ood_auroc_max_probability",
    *MC_COLUMNS,
)
RUN_COLUMNS = (*KEY_COLUMNS, "seed", *MEASURED)
SUMMARY_COLUMNS = (*KEY_COLUMNS, "seeds", *(f"{c}_{stat}" for c in MEASURED for stat in ("mean", "std")))
HISTORY_COLUMNS = ("split", "variant", "seed", *EpochStats.__dataclass_fields__)
FILES = ("runs.csv", "history.csv", "summary.csv", "results.md", *study_plots.FIGURES.values())


def summarize(rows: Sequence[Row], config: StudyConfig) -> list[Row]:
    """Per split and variant, in the grid's order: mean and sample standard deviation over seeds
    (NaN where a run has no such figure, e.g. MC columns without dropout, or std of one seed)."""
    summary = []
    for split in config.splits:
        for variant in config.variants:
            group = [r for r in rows if r["split"] == split.name and r["variant"] == variant.name]
            line: Row = {key: group[0][key] for key in KEY_COLUMNS} | {"seeds": len(group)}
            for column in MEASURED:
                values = np.array([r[column] for r in group], dtype=float)
                line[f"{column}_mean"] = float(values.mean())
                line[f"{column}_std"] = float(values.std(ddof=1)) if len(values) > 1 else math.nan
            summary.append(line)
    return summary


def write_csv(path: Path, columns: Sequence[str], rows: Sequence[Row]) -> None:
    with path.open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(columns), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="") as file:
        reader = csv.DictReader(file)
        return list(reader.fieldnames or []), list(reader)


def _cell(line: Row, column: str, percent: bool, digits: int) -> str:
    """'mean ± std' of a summary column; – where there is no figure. Accuracy reads as error."""
    mean, std = line[f"{column}_mean"], line[f"{column}_std"]
    if math.isnan(mean):
        return "–"
    if column.endswith("test_accuracy"):
        mean = 1.0 - mean
    scale = 100.0 if percent else 1.0
    spread = "" if math.isnan(std) else f" ± {scale * std:.{digits}f}"
    return f"{scale * mean:.{digits}f}{spread}"


TABLE = (  # (header, summary column, as a percentage, digits)
    ("test error %", "test_accuracy", True, 2),
    ("train − test accuracy %", "accuracy_gap", True, 2),
    ("test NLL", "test_loss", False, 3),
    ("test ECE %", "test_ece", True, 2),
    ("MC error %", "mc_test_accuracy", True, 2),
    ("MC NLL", "mc_test_loss", False, 3),
    ("MC ECE %", "mc_test_ece", True, 2),
    ("OOD AUROC, MI", "ood_auroc_mutual_information", False, 3),
    ("OOD AUROC, max prob.", "ood_auroc_max_probability", False, 3),
    ("mean MI in", "mean_mi_in", False, 4),
    ("mean MI out", "mean_mi_out", False, 4),
    ("rotation peak MI", "rotation_peak_mi", False, 3),
)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join([*lines, *("| " + " | ".join(row) + " |" for row in rows)])


def results_markdown(summary: Sequence[Row], config: StudyConfig, command: str, wall_seconds: float) -> str:
    """results.md: how the tables were made, then one table per split (mean ± std over seeds)."""
    sections = [
        "# Dropout study: results",
        f"Made by `{command}` at commit {git_commit() or 'unknown'}, torch {torch.__version__}, in "
        f"{wall_seconds / 60:.1f} min wall time: {config.workers} worker processes of one thread each, "
        f"on a machine with {os.cpu_count()} CPUs. Each cell is the mean ± sample standard deviation over "
        f"seeds {', '.join(map(str, config.seeds))}. Test columns: the deterministic (eval-mode) net on "
        f"the 10,000 MNIST test images. MC columns: the mean of T = {config.mc_samples} passes, on "
        f"{min(config.mc_inputs, 10_000):,} of them (evenly spread); OOD against as many Fashion-MNIST "
        "test images, flagged at the MI threshold calibrated on as many validation images. "
        "The write-up is [README.md](README.md).",
    ]
    for split in config.splits:
        lines = [line for line in summary if line["split"] == split.name]
        rows = [[line["variant"], *(_cell(line, c, pct, d) for _, c, pct, d in TABLE)] for line in lines]
        sections += [
            f"## {split.name} split: {split.train_size:,} training images, epochs: {split.epochs}",
            _table(["variant", *(h for h, *_ in TABLE)], rows),
        ]
    sections.append("\n".join(f"![{name}]({file})" for name, file in study_plots.FIGURES.items()))
    return "\n\n".join(sections) + "\n"


def run_study(config: StudyConfig, out: Path, command: str, progress: bool = True) -> float:
    """Every run of the grid, then the tables and figures into `out`; returns the wall seconds."""
    started = time.perf_counter()
    for name in ("mnist", "fashion-mnist"):
        load_dataset(name)  # fetched and cached once, before the workers read the cache
    specs = [
        RunSpec(variant, split, seed, config)
        for split in config.splits  # the full split first: its runs are the longest
        for variant in config.variants
        for seed in config.seeds
    ]
    spawn = multiprocessing.get_context("spawn")  # a fresh interpreter: no forked OpenMP state
    with ProcessPoolExecutor(config.workers, mp_context=spawn) as pool:
        futures = [pool.submit(run_one, spec) for spec in specs]
        for future in tqdm(as_completed(futures), total=len(futures), desc="runs", disable=not progress):
            row = future.result().row
            if progress:
                tqdm.write(
                    f"{row['split']} {row['variant']}, seed {row['seed']}: test accuracy "
                    f"{row['test_accuracy']:.4f} ({row['train_seconds']:.0f} s + {row['eval_seconds']:.0f} s)"
                )
        results = [future.result() for future in futures]
    runs = [result.row for result in results]
    history = [line for result in results for line in result.history]
    summary = summarize(runs, config)
    wall_seconds = time.perf_counter() - started

    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "runs.csv", RUN_COLUMNS, runs)
    write_csv(out / "history.csv", HISTORY_COLUMNS, history)
    write_csv(out / "summary.csv", SUMMARY_COLUMNS, summary)
    (out / "results.md").write_text(results_markdown(summary, config, command, wall_seconds))
    for name, png in study_plots.draw(summary, history, [s.name for s in config.splits]).items():
        (out / study_plots.FIGURES[name]).write_bytes(png)
    return wall_seconds


def check_outputs(out: Path, config: StudyConfig) -> None:
    """The outputs' shape, not their values: every file, each table's columns and row count."""
    missing = [name for name in FILES if not (out / name).is_file()]
    if missing:
        raise ValueError(f"{out}: missing {', '.join(missing)}")
    runs = len(config.splits) * len(config.variants) * len(config.seeds)
    epochs = sum(split.epochs for split in config.splits) * len(config.variants) * len(config.seeds)
    expected = {
        "runs.csv": (RUN_COLUMNS, runs),
        "history.csv": (HISTORY_COLUMNS, epochs),
        "summary.csv": (SUMMARY_COLUMNS, len(config.splits) * len(config.variants)),
    }
    for name, (columns, count) in expected.items():
        header, rows = read_csv(out / name)
        if tuple(header) != columns or len(rows) != count:
            raise ValueError(
                f"{out / name}: {len(header)} columns and {len(rows)} rows, expected "
                f"{len(columns)} and {count}"
            )


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="python -m training study", description=(__doc__ or "").split("\n\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="a tiny grid for CI: checks shapes, not values")
    parser.add_argument(
        "--out",
        type=Path,
        help="output folder (default docs/dropout-study, or .cache/study-quick with --quick)",
    )
    parser.add_argument("--workers", type=int, help="worker processes, one thread each (default 2)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar or per-run lines")
    args = parser.parse_args(argv)
    config = QUICK if args.quick else StudyConfig()
    if args.workers:
        config = replace(config, workers=args.workers)
    out = args.out or Path(".cache/study-quick" if args.quick else "docs/dropout-study")
    command = " ".join(["python -m training study", *argv])
    wall_seconds = run_study(config, out, command, progress=not args.no_progress)
    check_outputs(out, config)
    print(f"wrote {out}/ in {wall_seconds / 60:.1f} min")
    return 0
