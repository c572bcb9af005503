"""The `dropserve` command against a real server: tables, JSON, errors, and delegation."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from client.cli import main
from tests.client.conftest import API_KEY, DIGIT

DROPSERVE = Path(sys.executable).parent / "dropserve"  # the console script `pip install` made


def rows(table: str) -> list[dict[str, str]]:
    """The rows of a printed table as {column: cell}; lines after the table are left out."""
    header, *lines = table.splitlines()
    columns = header.split()
    return [
        dict(zip(columns, line.split(), strict=True)) for line in lines if len(line.split()) == len(columns)
    ]


def test_predict_prints_a_table(server, capsys):
    assert main(["predict", str(DIGIT), str(DIGIT), "--url", server.url, "--api-key", API_KEY]) == 0
    out = capsys.readouterr().out
    table = rows(out)
    assert [row["FILE"] for row in table] == [str(DIGIT), str(DIGIT)]
    assert table[0]["LABEL"] == table[0]["CLASS"] and 0 < float(table[0]["CONFIDENCE"]) <= 1
    assert out.rstrip().endswith("mnist-mlp version 1")


def test_uncertainty_prints_a_table_or_json(server, capsys):
    args = [
        "uncertainty",
        str(DIGIT),
        "--samples",
        "20",
        "--seed",
        "3",
        "--url",
        server.url,
        "--api-key",
        API_KEY,
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    (row,) = rows(out)
    assert set(row) == {"FILE", "LABEL", "CLASS", "CONFIDENCE", "ENTROPY", "MUTUAL_INFO", "OOD"}
    assert row["OOD"] in ("yes", "no")
    assert "20 MC samples, seed 3" in out

    assert main([*args, "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["samples"] == 20 and answer["seed"] == 3 and answer["model"]["name"] == "mnist-mlp"
    (prediction,) = answer["predictions"]
    assert prediction["file"] == str(DIGIT)
    assert f"{prediction['mutual_information']:.4f}" == row["MUTUAL_INFO"]
    assert "sample_probabilities" not in prediction  # not asked for, so not printed as null


def test_models_and_the_environment(server, capsys, monkeypatch):
    monkeypatch.setenv("DROPSERVE_URL", server.url)
    monkeypatch.setenv("DROPSERVE_API_KEY", API_KEY)
    assert main(["models"]) == 0
    assert rows(capsys.readouterr().out) == [{"MODEL": "mnist-mlp", "VERSIONS": "1", "DEFAULT": "1"}]
    assert main(["predict", str(DIGIT), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["model"]["name"] == "mnist-mlp"


def test_refusals_and_failures_exit_1_with_the_reason(server, capsys, tmp_path):
    assert main(["predict", str(DIGIT), "--url", server.url, "--api-key", API_KEY, "--model", "nope"]) == 1
    err = capsys.readouterr().err
    assert "404 not_found: unknown model 'nope'" in err and "request id" in err

    assert main(["predict", str(DIGIT), "--url", server.url]) == 1  # no key
    assert "401 unauthorized" in capsys.readouterr().err

    assert main(["predict", str(tmp_path / "missing.png"), "--url", server.url, "--api-key", API_KEY]) == 1
    assert "missing.png" in capsys.readouterr().err

    assert main(["models", "--url", "http://127.0.0.1:9"]) == 1
    assert "cannot reach http://127.0.0.1:9" in capsys.readouterr().err


def test_the_console_script(server):
    done = subprocess.run(
        [str(DROPSERVE), "predict", str(DIGIT), "--url", server.url, "--api-key", API_KEY],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert rows(done.stdout)[0]["FILE"] == str(DIGIT)


def test_train_and_serve_delegate_to_the_modules():
    train = subprocess.run([str(DROPSERVE), "train", "--help"], capture_output=True, text=True, timeout=120)
    assert train.returncode == 0 and "usage: python -m training" in train.stdout
    serve = subprocess.run(  # an invalid setting: python -m service refuses it and exits 2
        [str(DROPSERVE), "serve", "--port", "70000"], capture_output=True, text=True, timeout=120
    )
    assert serve.returncode == 2 and "DROPSERVE_* settings: port" in serve.stderr
