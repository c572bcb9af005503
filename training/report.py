"""Everything measured about a trained network after training: the test set (deterministic and MC
at several T), the OOD threshold on validation, OOD detection against the partner dataset, and the
rotated-digit experiment. The result is the evaluation part of metrics.json."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from models.network import DropoutMLP
from training.datasets import DatasetError, load_dataset
from training.evaluate import calibrate_ood_threshold, evaluate, mc_summaries, predict_deterministic
from training.ood import OOD_PARTNER, ood_evaluation
from training.rotation import ANGLES, first_index_of, rotate, rotation_experiment

log = logging.getLogger(__name__)

ROTATED_DIGIT = 1  # Gal & Ghahramani rotate a 1; for Fashion-MNIST class 1 is "Trouser"


@dataclass
class Report:
    metrics: dict[str, Any]  # test, ood, rotation, ood_threshold, evaluation_seconds
    ood_threshold: float
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
    x_test: Tensor,
    y_test: Tensor,
    samples: int = 100,
    seed: int = 0,
) -> Report:
    """Measure `model` (eval mode) on every axis the model card shows."""
    model.eval()
    started = time.perf_counter()
    test = evaluate(model, x_test, y_test, samples=samples, seed=seed)
    threshold = calibrate_ood_threshold(model, x_val, samples=samples, seed=seed)
    log.info("test set and OOD threshold done in %.1fs", time.perf_counter() - started)

    partner, x_out, missing = load_ood_test(dataset, str(x_test.device))
    ood: dict[str, Any] = {"dataset": partner, "samples": samples}
    if x_out is None:
        ood["skipped"] = missing
    else:
        out_summary = mc_summaries(model, x_out, samples, seed + 1)  # its own passes, not the test's
        ood |= ood_evaluation(
            test.summary, test.deterministic, out_summary, predict_deterministic(model, x_out), threshold
        )

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
            "evaluation_seconds": seconds,
        },
        ood_threshold=threshold,
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
    scores = metrics["ood"].get("scores")
    if scores:
        headline["ood_dataset"] = metrics["ood"]["dataset"]
        for name in ("max_probability", "predictive_entropy", "mutual_information"):
            headline[f"ood_auroc_{name}"] = scores[name]["auroc"]
    return headline
