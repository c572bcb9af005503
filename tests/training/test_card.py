"""The evaluation report and the model card rendered from it (tiny model, synthetic data)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import training.report as report_module
from models.spec import Manifest, Normalization
from tests.conftest import TINY_SPEC, tiny_model
from training.card import PLOTS, card_files, headline_table
from training.datasets import DatasetError, Splits
from training.report import evaluation_report, headline_metrics

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def fake_splits() -> Splits:
    pixels = np.random.default_rng(0).integers(0, 256, (30, 28, 28), dtype=np.uint8)
    labels = np.zeros(30, dtype=np.uint8)
    return Splits(x_train=pixels, y_train=labels, x_test=pixels, y_test=labels)


def full_metrics(monkeypatch: pytest.MonkeyPatch, ood_available: bool):
    def load(name: str) -> Splits:
        if not ood_available:
            raise DatasetError(f"no source for {name} verified (install it)")
        return fake_splits()

    monkeypatch.setattr(report_module, "load_dataset", load)
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(40, 784, generator=generator)
    y = torch.arange(40) % 10
    classes = [str(d) for d in range(10)]
    report = evaluation_report(tiny_model(), "mnist", x, y, x, y, classes, samples=6, seed=0)
    history = [
        {"epoch": e, "train_loss": 1 / e, "train_accuracy": 0.5, "val_loss": 1 / e, "val_accuracy": 0.6}
        for e in (1, 2)
    ]
    metrics = {
        "dataset": "mnist",
        "recipe": "seed",
        "train_seconds": 1.5,
        "threads": 2,
        "train_size": 40,
        "validation_size": 40,
        "history": history,
        **report.metrics,
    }
    manifest = Manifest(
        name="mnist-mlp",
        spec=TINY_SPEC,
        normalization=Normalization(),
        class_names=[str(d) for d in range(10)],
        provenance={
            "recipe": {
                "optimizer": "adam",
                "learning_rate": 1e-3,
                "momentum": 0.0,
                "schedule": "constant",
                "batch_size": 64,
                "epochs": 2,
            },
            "device": "cpu",
            "seed": 0,
            "versions": {"torch": torch.__version__},
        },
    )
    return manifest.to_dict(), metrics, report


def test_report_and_card_with_ood(monkeypatch):
    manifest, metrics, report = full_metrics(monkeypatch, ood_available=True)
    assert metrics["ood"]["dataset"] == "fashion-mnist" and metrics["ood"]["n_out"] == 30
    assert (
        report.ood_threshold == metrics["ood_threshold"] == metrics["ood"]["threshold"]["mutual_information"]
    )
    assert report.rotation_thumbnails.shape == (12, 28, 28)
    files = card_files(manifest, metrics, report.rotation_thumbnails)
    assert set(files) == {"card.md", *PLOTS.values()}
    card = files["card.md"].decode()
    for png in PLOTS.values():
        assert f"]({png})" in card and files[png].startswith(PNG_MAGIC)
    assert headline_table(metrics) in card
    assert "| 165° |" in card and "mutual information" in card
    for section in ("## Calibrated probabilities", "## Prediction sets", "## Abstention", "## Under shift"):
        assert section in card
    assert "| 180° |" in card  # the shift table's last angle
    assert [level["coverage"] for level in metrics["conformal"]["levels"]] == [0.9, 0.95, 0.99, 0.995, 0.999]
    assert set(metrics["shift"]) == {"rotation", "partner"}
    assert metrics["calibration"]["test"]["after"]["ece"] >= 0
    assert report.fitted.conformal.calibration_size == 32  # 40 validation inputs, the first 8 tune
    headline = headline_metrics(metrics)
    assert headline["test_error_mc"] == pytest.approx(1 - headline["test_accuracy_mc"])
    assert "ood_auroc_mutual_information" in headline


def test_missing_ood_data_skips_that_section_only(monkeypatch):
    manifest, metrics, _ = full_metrics(monkeypatch, ood_available=False)
    assert metrics["ood"]["skipped"].startswith("no source for fashion-mnist")
    files = card_files(manifest, metrics)
    assert PLOTS["ood"] not in files and files[PLOTS["rotation"]].startswith(PNG_MAGIC)
    assert "partner" not in metrics["shift"] and files[PLOTS["shift"]].startswith(PNG_MAGIC)
    assert "Skipped: no source for fashion-mnist" in files["card.md"].decode()
    assert "ood_dataset" not in headline_metrics(metrics)
