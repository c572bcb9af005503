"""Segmented shared-prefix sampling: each segment of a micro-batch keeps its own seed's answer."""

from __future__ import annotations

import pytest
import torch

from models.mc_dropout import generator_for, mc_dropout_logits, mc_dropout_logits_segments
from models.network import DropoutMLP
from models.spec import MLPSpec
from tests.conftest import tiny_model

SEED_SPEC = MLPSpec(hidden_sizes=(128,), input_dropout=0.0, hidden_dropout=0.5)  # the seed recipe's widths
PAPER_SPEC = MLPSpec(hidden_sizes=(24, 24, 24), input_dropout=0.2, hidden_dropout=0.5)


pytestmark = pytest.mark.usefixtures("one_thread")


def images(rows: int, seed: int) -> torch.Tensor:
    return torch.rand(rows, 784, generator=torch.Generator().manual_seed(seed))


def segments(model: DropoutMLP, parts: list[tuple[torch.Tensor, int]], samples: int) -> torch.Tensor:
    x = torch.cat([part for part, _ in parts])
    generators = [generator_for(seed) for _, seed in parts]
    return mc_dropout_logits_segments(model, x, samples, generators, [len(part) for part, _ in parts])


@pytest.mark.parametrize("spec", [SEED_SPEC, PAPER_SPEC], ids=["seed", "paper"])
@pytest.mark.parametrize("samples", [1, 100, 300])  # 300 spans several chunks of passes
def test_a_segment_answer_does_not_depend_on_its_batch_mates(spec, samples):
    model = tiny_model(spec=spec)
    mine = images(2, seed=1)
    alone = segments(model, [(mine, 42)], samples)  # (T, 2, C)
    for others in ([(images(5, 2), 7)], [(images(1, 3), 8), (images(3, 4), 9)]):
        before = segments(model, [*others, (mine, 42)], samples)
        after = segments(model, [(mine, 42), *others], samples)
        assert torch.equal(before[:, -2:], alone)
        assert torch.equal(after[:, :2], alone)


@pytest.mark.parametrize("mates", [1, 2, 7, 40])
def test_one_image_s_seed_model_samples_are_the_same_beside_any_number_of_images(mates):
    model = tiny_model(spec=SEED_SPEC)  # one dropout, folded into the output layer
    mine = images(1, seed=1)
    alone = segments(model, [(mine, 42)], 100)  # (T, 1, C)
    others = [(images(1, seed=10 + i), i) for i in range(mates)]
    assert torch.equal(segments(model, [*others, (mine, 42)], 100)[:, -1:], alone)
    assert torch.equal(segments(model, [(mine, 42), *others], 100)[:, :1], alone)


@pytest.mark.parametrize("spec", [SEED_SPEC, PAPER_SPEC], ids=["seed", "paper"])
def test_one_segment_draws_the_same_masks_as_the_shared_prefix_sampler(spec):
    model = tiny_model(spec=spec)
    x = images(6, seed=5)  # 6 rows: no padding, the same matrices as the plain sampler
    plain = mc_dropout_logits(model, x, 50, generator_for(3), method="shared_prefix")
    assert torch.equal(segments(model, [(x, 3)], 50), plain)
    one_row = images(1, seed=6)  # both pad small matrices the same way
    plain = mc_dropout_logits(model, one_row, 50, generator_for(3), method="shared_prefix")
    assert torch.equal(segments(model, [(one_row, 3)], 50), plain)


def test_segments_have_the_distribution_of_independent_passes():
    """Against the loop of full passes: the same mean and spread of softmax outputs."""
    model = tiny_model(spec=PAPER_SPEC)
    x = images(1, seed=7)
    batched = torch.softmax(segments(model, [(x, 1), (images(3, 8), 2)], 4000)[:, :1], -1)
    looped = torch.softmax(mc_dropout_logits(model, x, 4000, generator_for(11), method="loop"), -1)
    assert torch.allclose(batched.mean(0), looped.mean(0), atol=0.02)
    assert torch.allclose(batched.std(0), looped.std(0), atol=0.02)


def test_different_seeds_give_different_samples_and_bad_segments_are_refused():
    model = tiny_model(spec=SEED_SPEC)
    x = images(1, seed=9)
    both = segments(model, [(x, 1), (x, 2)], 20)
    assert not torch.equal(both[:, 0], both[:, 1])
    with pytest.raises(ValueError, match="segment"):
        mc_dropout_logits_segments(model, images(3, 1), 5, [generator_for(0)], [2])
    with pytest.raises(ValueError, match="samples"):
        mc_dropout_logits_segments(model, x, 0, [generator_for(0)], [1])
