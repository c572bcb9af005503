"""Integration: the README's `dropserve predict docs/examples/digit-7.png` against a really
trained model prints 7."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from client import Client

pytestmark = pytest.mark.integration
ROOT = Path(__file__).parents[2]
DROPSERVE = Path(sys.executable).parent / "dropserve"


def test_dropserve_predict_prints_7(server_url):
    done = subprocess.run(
        [str(DROPSERVE), "predict", "docs/examples/digit-7.png", "--url", server_url],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    header, row, *_ = done.stdout.splitlines()
    assert header.split()[:2] == ["FILE", "LABEL"]
    assert row.split()[:2] == ["docs/examples/digit-7.png", "7"]


def test_the_client_reads_the_example_digits(server_url):
    examples = ROOT / "docs" / "examples"
    with Client(server_url) as client:
        predicted = client.predict(examples / "digit-7.png", examples / "digit-2-paper.png")
        uncertain = client.uncertainty(examples / "digit-7.png", samples=100, seed=1)
    assert [p.label for p in predicted.predictions] == [7, 2]
    assert uncertain.predictions[0].label == 7 and not uncertain.predictions[0].ood
