"""Everything measured about a trained network after training: the test set (deterministic and MC
at several T), what is fitted on validation (the OOD threshold, the temperature, the conformal
quantiles, the abstention policy) and its test-set evidence, OOD detection against the partner
dataset, the rotated-digit experiment, and prediction sets under shift. The result is the evaluation
part of metrics.json."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from models.network import DropoutMLP
from training import calibration
from training.datasets import DatasetError, load_dataset
from training.evaluate import evaluate, mc_summaries, ood_threshold, predict_deterministic
from training.ood import OOD_PARTNER, ood_evaluation
from training.rotation import ANGLES, first_index_of, rotate, rotation_experiment
from training.shift import partner_shift, rotation_shift

log = logging.getLogger(__name__)

ROTATED_DIGIT = 1  # Gal & Ghahramani rotate a 1; for Fashion-MNIST class 1 is "Trouser"


@dataclass
class Report:
    metrics: dict[str, Any]  # test, ood, rotation, calibration, conformal, abstention, shift, ...
    ood_threshold: float
    fitted: calibration.Fitted  # temperature, conformal levels, abstention policy: for model.json
    rotation_thumbnails: np.ndarray  # (angles, 28, 28) the rotated digit, for the card


def load_ood_test(dataset: str, device: str) -> tuple[str, Tensor | None, str | None]:
    """(partner name, its test images (N, 784) or None, why they are missing)."""
    partner = OOD_PARTNER[dataset]
    try:
        splits = load_dataset(partner)
    except DatasetError as e:
        log.warning("no out-of-distribution evaluation: %s", e)
        return partner, None, str(e).splitlines()[0]
    pixels = torch.from_numpy(splits.x_test.reshape(len(splits.x_test), -1).astype(np.float32) / 255.0)
    return partner, pixels.to(device), None


def evaluation_report(
    model: DropoutMLP,
    dataset: str,
    x_val: Tensor,
    y_val: Tensor,
    x_test: Tensor,
    y_test: Tensor,
    class_names: list[str],
    samples: int = 100,
    seed: int = 0,
) -> Report:
    """Measure `model` (eval mode) on every axis the model card shows."""
    model.eval()
    started = time.perf_counter()
    test = evaluate(model, x_test, y_test, samples=samples, seed=seed)
    validation = mc_summaries(model, x_val, samples, seed)  # the statistics every fit below uses
    threshold = ood_threshold(validation)
    fitted = calibration.fit(validation, y_val.numpy(force=True), samples, seed)
    evidence = calibration.measure_on_test(test.summary, y_test.numpy(force=True), fitted, class_names)
    log.info("test set and calibration done in %.1fs", time.perf_counter() - started)

    partner, x_out, missing = load_ood_test(dataset, str(x_test.device))
    ood: dict[str, Any] = {"dataset": partner, "samples": samples}
    shift: dict[str, Any] = {}
    if x_out is None:
        ood["skipped"] = missing
    else:
        out_summary = mc_summaries(model, x_out, samples, seed + 1)  # its own passes, not the test's
        ood |= ood_evaluation(
            test.summary, test.deterministic, out_summary, predict_deterministic(model, x_out), threshold
        )
        shift["partner"] = partner_shift(out_summary, partner, fitted, threshold)
    shift["rotation"] = rotation_shift(model, x_test, y_test, fitted, threshold, samples, seed + 3)

    rotation = rotation_experiment(model, x_test, y_test, ROTATED_DIGIT, samples=samples, seed=seed + 2)
    digit = first_index_of(y_test, ROTATED_DIGIT)
    thumbnails = torch.cat([rotate(x_test[digit : digit + 1], angle) for angle in ANGLES])  # (A, 784)
    seconds = time.perf_counter() - started
    log.info("evaluation done in %.1fs", seconds)
    return Report(
        metrics={
            "test": test.metrics,
            "ood_threshold": threshold,
            "ood": ood,
            "rotation": rotation,
            **evidence,
            "shift": shift,
            "evaluation_seconds": seconds,
        },
        ood_threshold=threshold,
        fitted=fitted,
        rotation_thumbnails=thumbnails.reshape(-1, 28, 28).cpu().numpy(),
    )


def headline_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    """The few figures model.json carries (and `/v1/models/{name}` shows)."""
    test = metrics["test"]
    mc = test[f"mc_t{test['mc_samples']}"]
    headline = {
        "test_accuracy": test["deterministic"]["accuracy"],
        "test_accuracy_mc": mc["accuracy"],
        "test_error_mc": 1.0 - mc["accuracy"],
        "test_nll_mc": mc["nll"],
        "test_ece": test["deterministic"]["ece"],
        "test_ece_mc": mc["ece"],
        "train_seconds": round(metrics["train_seconds"], 2),
    }
    if "calibration" in metrics:
        headline["test_ece_mc_calibrated"] = metrics["calibration"]["test"]["after"]["ece"]
        for level in metrics["conformal"]["levels"]:
            key = calibration.level_key(level["coverage"])
            headline[f"test_set_coverage_{key}"] = level["test"]["coverage"]
            headline[f"test_set_size_{key}"] = level["test"]["mean_size"]
    scores = metrics["ood"].get("scores")
    if scores:
        headline["ood_dataset"] = metrics["ood"]["dataset"]
        for name in ("max_probability", "predictive_entropy", "mutual_information"):
            headline[f"ood_auroc_{name}"] = scores[name]["auroc"]
    return headline
