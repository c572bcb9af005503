"""Test-set evaluation: the MC grid, its prefix sharing, selective prediction, OOD threshold."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.mc_dropout import MaskSource, mc_dropout_logits
from tests.conftest import tiny_model
from training.evaluate import (
    MC_GRID,
    calibrate_ood_threshold,
    evaluate,
    mc_summaries,
    summarize_passes,
)
from training.metrics import classification_metrics, fraction_above


@pytest.fixture
def data() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return torch.rand(50, 784, generator=generator), torch.randint(0, 10, (50,), generator=generator)


def test_grid_covers_the_issue_and_the_primary_t(data):
    x, y = data
    result = evaluate(tiny_model(), x, y, samples=20, seed=1, grid=MC_GRID)
    assert result.metrics["mc_grid"] == [1, 10, 20, 30, 100, 300]
    for t in result.metrics["mc_grid"]:
        mc = result.metrics[f"mc_t{t}"]
        assert set(mc) == {
            "accuracy",
            "nll",
            "brier",
            "ece",
            "mean_predictive_entropy",
            "mean_mutual_information",
        }
    assert result.metrics["mc_t1"]["mean_mutual_information"] == 0.0


def test_each_t_uses_the_first_t_passes_of_one_sampling(data):
    x, y = data
    model = tiny_model()
    result = evaluate(model, x, y, samples=5, seed=7, grid=(3, 8))
    logits = mc_dropout_logits(model, x, 8, MaskSource(7))  # one batch: the same stream
    probs = torch.softmax(logits, dim=-1)
    assert result.metrics["mc_t3"]["nll"] == pytest.approx(
        classification_metrics(probs[:3].mean(0), y)["nll"]
    )
    np.testing.assert_allclose(
        result.summary.mutual_information, summarize_passes(logits[:5]).mutual_information
    )


def test_selective_table_and_reliability(data):
    x, y = data
    result = evaluate(tiny_model(), x, y, samples=10, grid=(10,))
    table = result.metrics["selective"]
    assert table["abstain"] == [0.0, 0.05, 0.10, 0.20]
    assert table["mc_max_probability"][0] == result.metrics["mc_t10"]["accuracy"]
    assert sum(b["count"] for b in result.metrics["reliability"]["mc"]) == 50


def test_threshold_flags_the_chosen_share_of_validation(data):
    x, _ = data
    model = tiny_model()
    threshold = calibrate_ood_threshold(model, x, samples=10, quantile=0.9, seed=2)
    flagged = fraction_above(mc_summaries(model, x, 10, seed=2).mutual_information, threshold)
    assert flagged == pytest.approx(0.1, abs=0.02)
