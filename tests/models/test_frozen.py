"""The inference layout of a DropoutMLP: the module's arithmetic, a snapshot of its weights."""

from __future__ import annotations

import pytest
import torch

from models.frozen import MIN_BATCH_ROWS, freeze
from models.network import DropoutMLP
from models.spec import MLPSpec
from tests.conftest import tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize(
    "spec",
    [MLPSpec(hidden_sizes=(128,), input_dropout=0.0), MLPSpec(hidden_sizes=(64, 32), activation="gelu")],
    ids=["seed", "two gelu layers"],
)
def test_frozen_logits_are_the_eval_forward(spec):
    model = DropoutMLP(spec).eval()
    x = torch.rand(7, 784)
    with torch.inference_mode():
        assert torch.allclose(freeze(model).logits(x), model(x), atol=1e-5)


@pytest.mark.parametrize("rows", [1, 5, 300])
def test_a_row_s_logits_do_not_depend_on_the_rows_around_it(rows):
    frozen = freeze(DropoutMLP(MLPSpec(hidden_sizes=(128,))).eval())  # the seed recipe's widths
    x = torch.rand(rows, 784, generator=torch.Generator().manual_seed(rows))
    with torch.inference_mode():
        alone = torch.cat([frozen.logits(row[None]) for row in x])  # each padded to MIN_BATCH_ROWS
        assert torch.equal(frozen.logits(x), alone)


def test_numpy_normalization_has_torch_s_bits_and_pads_with_zero_rows():
    frozen = freeze(tiny_model())
    x = torch.rand(2, 784, generator=torch.Generator().manual_seed(0))
    x[0, :3] = torch.tensor([0.0, 1.0, 0.5])  # the pixel range's ends
    padded = frozen.normalized_rows(x)  # CPU float32: in numpy
    assert padded.shape == (MIN_BATCH_ROWS, 784)
    assert torch.equal(padded[:2], frozen.normalize(x))
    assert not padded[2:].any()


def test_a_frozen_model_keeps_the_weights_it_was_frozen_with():
    model = tiny_model()
    frozen = freeze(model)
    x = torch.rand(3, 784)
    before = frozen.logits(x)
    with torch.no_grad():
        model.hidden[0].weight.add_(1.0)  # training goes on
        model.output.bias.add_(1.0)
    assert torch.equal(frozen.logits(x), before)
    assert not torch.allclose(freeze(model).logits(x), before)
    assert freeze(frozen) is frozen
