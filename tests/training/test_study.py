"""The dropout study's quick grid on real data: every output file, with its columns and row count.
Values are not checked: the quick grid trains for an epoch or two and proves only the plumbing.
Also the two penalties the study added to the training loop (synthetic data)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from models.network import DropoutMLP
from tests.conftest import TINY_SPEC
from training import study
from training.loop import l1_penalty, train
from training.recipes import RECIPES
from training.study_plots import FIGURES

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def trained(**penalties: float) -> DropoutMLP:
    generator = torch.Generator().manual_seed(0)
    x, y = torch.rand(256, 784, generator=generator), torch.randint(0, 10, (256,), generator=generator)
    recipe = RECIPES["seed"].with_overrides(spec=TINY_SPEC, epochs=10, **penalties)
    torch.manual_seed(0)
    model = DropoutMLP(TINY_SPEC)
    train(model, recipe, x, y, x[:64], y[:64], seed=0, progress=False)
    return model


def weight_norm(model: DropoutMLP) -> float:
    return sum(layer.weight.pow(2).sum().item() for layer in (*model.hidden, model.output))


def test_l1_and_weight_decay_shrink_the_weights() -> None:
    plain = trained()
    assert l1_penalty(trained(l1=1e-1)) < 0.9 * l1_penalty(plain)
    assert weight_norm(trained(weight_decay=1.0)) < 0.9 * weight_norm(plain)


@pytest.fixture(scope="module")
def outputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("study")
    assert study.main(["--quick", "--out", str(out), "--no-progress"]) == 0
    return out


def read(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="") as file:
        reader = csv.DictReader(file)
        return list(reader.fieldnames or []), list(reader)


@pytest.mark.integration
def test_every_file_is_written(outputs: Path) -> None:
    expected = {"runs.csv", "history.csv", "summary.csv", "results.md", *FIGURES.values()}
    assert {p.name for p in outputs.iterdir()} == expected
    for name in FIGURES.values():
        assert (outputs / name).read_bytes().startswith(PNG_MAGIC)


@pytest.mark.integration
def test_one_run_row_per_split_variant_and_seed(outputs: Path) -> None:
    header, rows = read(outputs / "runs.csv")
    assert header == list(study.RUN_COLUMNS)
    grid = study.QUICK
    assert len(rows) == len(grid.splits) * len(grid.variants) * len(grid.seeds) == 2 * 12 * 2
    assert {(r["split"], r["variant"], r["seed"]) for r in rows} == {
        (s.name, v.name, str(seed)) for s in grid.splits for v in grid.variants for seed in grid.seeds
    }
    for row in rows:
        mc = row["ood_auroc_mutual_information"]
        has_dropout = float(row["hidden_dropout"]) > 0 or float(row["input_dropout"]) > 0
        assert (mc != "nan") == has_dropout, "MC figures exactly for the runs with dropout"
        assert row["test_accuracy"] != "nan" and row["ood_auroc_max_probability"] != "nan"


@pytest.mark.integration
def test_one_history_row_per_epoch_of_every_run(outputs: Path) -> None:
    header, rows = read(outputs / "history.csv")
    assert header == [
        "split",
        "variant",
        "seed",
        "epoch",
        "train_loss",
        "train_accuracy",
        "val_loss",
        "val_accuracy",
    ]
    per_split = {s.name: s.epochs for s in study.QUICK.splits}
    runs = len(study.QUICK.variants) * len(study.QUICK.seeds)
    assert len(rows) == runs * sum(per_split.values())
    for name, epochs in per_split.items():
        assert sorted({int(r["epoch"]) for r in rows if r["split"] == name}) == list(range(1, epochs + 1))


@pytest.mark.integration
def test_summary_and_markdown_have_a_line_per_split_and_variant(outputs: Path) -> None:
    header, rows = read(outputs / "summary.csv")
    assert header == list(study.SUMMARY_COLUMNS)
    assert {"test_accuracy_mean", "test_accuracy_std", "accuracy_gap_mean", "mean_mi_out_std"} <= set(header)
    assert len(rows) == 2 * 12 and {r["seeds"] for r in rows} == {"2"}
    markdown = (outputs / "results.md").read_text()
    table_lines = [line for line in markdown.splitlines() if line.startswith("| ")]
    assert len(table_lines) == 2 * (1 + 12)  # per split: a header and a line per variant
    for name in FIGURES.values():
        assert f"]({name})" in markdown


@pytest.mark.integration
def test_check_outputs_refuses_a_missing_file(outputs: Path, tmp_path: Path) -> None:
    for path in outputs.iterdir():
        (tmp_path / path.name).write_bytes(path.read_bytes())
    study.check_outputs(tmp_path, study.QUICK)
    (tmp_path / "history.csv").unlink()
    with pytest.raises(ValueError, match=r"missing history\.csv"):
        study.check_outputs(tmp_path, study.QUICK)
