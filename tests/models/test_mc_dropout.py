import hashlib

import numpy as np
import pytest
import torch

from models.mc_dropout import (
    MaskGenerator,
    _coins,
    _inverted_mask,
    _segment_dropout,
    deterministic_probabilities,
    dropout_with_generator,
    generator_for,
    mc_dropout_logits,
    mc_dropout_probabilities,
)
from models.network import DropoutMLP
from models.spec import MLPSpec
from tests.conftest import tiny_model

SEED_SPEC = MLPSpec(hidden_sizes=(128,), input_dropout=0.0, hidden_dropout=0.5)  # the seed recipe's widths


def test_functional_dropout_matches_train_mode_nn_dropout_statistics():
    # Both zero a fraction `rate` and scale survivors by 1/(1-rate): the mean activation is kept.
    torch.manual_seed(0)  # the 1% bounds below are three standard errors: fixed draws, not flaky
    h = torch.rand(200, 500) + 0.5
    ours = dropout_with_generator(h, 0.5, generator_for(0))
    reference = torch.nn.Dropout(0.5).train()(h)
    assert (ours == 0).float().mean().item() == pytest.approx(0.5, abs=0.01)
    assert (reference == 0).float().mean().item() == pytest.approx(0.5, abs=0.01)
    # Mean activation within 1% of the input mean (100k elements; std of the mean ~ 0.3%).
    assert ours.mean().item() == pytest.approx(h.mean().item(), rel=0.01)
    assert reference.mean().item() == pytest.approx(h.mean().item(), rel=0.01)
    kept = ours != 0
    assert torch.allclose(ours[kept], h[kept] * 2)


def test_same_seed_same_passes_and_different_seed_different_passes():
    model = tiny_model()
    x = torch.rand(3, 784)
    a = mc_dropout_logits(model, x, 20, generator_for(7))
    b = mc_dropout_logits(model, x, 20, generator_for(7))
    c = mc_dropout_logits(model, x, 20, generator_for(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert a.shape == (20, 3, 10)


def test_model_stays_in_eval_mode_and_passes_vary():
    model = tiny_model()
    probs = mc_dropout_probabilities(model, torch.rand(2, 784), 50, generator_for(0))
    assert not model.training
    assert probs.std(0).max() > 0  # dropout really was applied
    assert torch.allclose(probs.sum(-1), torch.ones(50, 2))


@pytest.mark.parametrize("input_dropout", [0.0, 0.2])
def test_shared_prefix_and_whole_input_replication_give_identical_samples(input_dropout):
    torch.manual_seed(0)
    model = DropoutMLP(MLPSpec(hidden_sizes=(32, 16), input_dropout=input_dropout)).eval()
    x = torch.rand(4, 784)
    shared = mc_dropout_logits(model, x, 10, generator_for(3), "shared_prefix")
    replicate = mc_dropout_logits(model, x, 10, generator_for(3), "replicate")
    assert torch.allclose(shared, replicate, atol=1e-5)


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("rate", [0.5, 0.3], ids=["coins in numpy", "uniform draws in torch"])
@pytest.mark.parametrize("rows", [1, 5])
def test_dropout_folded_into_the_output_layer_gives_the_replicated_samples(rate, rows):
    # One hidden layer, no input dropout: the shared prefix multiplies masks by activation-scaled
    # output weights instead of dropping units and then applying the output layer.
    model = DropoutMLP(MLPSpec(hidden_sizes=(128,), input_dropout=0.0, hidden_dropout=rate)).eval()
    x = torch.rand(rows, 784, generator=torch.Generator().manual_seed(rows))
    shared = mc_dropout_logits(model, x, 100, generator_for(3), "shared_prefix")
    replicate = mc_dropout_logits(model, x, 100, generator_for(3), "replicate")
    assert shared.shape == (100, rows, 10)
    assert torch.allclose(shared, replicate, rtol=1e-5, atol=1e-5)
    assert not torch.equal(shared[0], shared[1])  # the passes differ


def test_an_input_that_requires_grad_records_no_graph():
    model = tiny_model()
    x = torch.rand(2, 784, requires_grad=True)
    assert not mc_dropout_logits(model, x, 5, generator_for(0)).requires_grad
    assert not mc_dropout_logits(model, x, 5, generator_for(0), "replicate").requires_grad
    assert not deterministic_probabilities(model, x).requires_grad
    assert x.grad is None


@pytest.mark.parametrize(
    "spec",
    [MLPSpec(hidden_sizes=(32,), input_dropout=0.0), MLPSpec(hidden_sizes=(32, 16), input_dropout=0.2)],
    ids=["one dropout layer", "several"],
)
def test_loop_matches_shared_prefix_in_distribution(spec):
    # The loop draws its masks pass by pass, so its samples differ: compare statistics.
    torch.manual_seed(0)
    model = DropoutMLP(spec).eval()
    x = torch.rand(2, 784)
    shared = mc_dropout_probabilities(model, x, 4000, generator_for(1), "shared_prefix")
    loop = mc_dropout_probabilities(model, x, 4000, generator_for(2), "loop")
    # Means of 4000 passes; per-class std of a pass is below 0.2, so the mean's is below 0.004.
    assert torch.allclose(shared.mean(0), loop.mean(0), atol=0.02)
    assert torch.allclose(shared.std(0), loop.std(0), atol=0.02)


def test_mc_mean_approaches_deterministic_prediction_for_a_confident_model():
    model = tiny_model()
    x = torch.rand(8, 784)
    mc_mean = mc_dropout_probabilities(model, x, 2000, generator_for(0)).mean(0)
    deterministic = deterministic_probabilities(model, x)
    assert (mc_mean - deterministic).abs().max() < 0.1


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("rows", [1, 3, 6])
def test_a_prediction_is_the_eval_forward_and_the_same_in_any_batch(rows):
    model = DropoutMLP(SEED_SPEC).eval()  # the served widths: their kernels are what is tested
    x = torch.rand(rows, 784, generator=torch.Generator().manual_seed(rows))
    alone = deterministic_probabilities(model, x)
    for mates in (2, 9, 40, 300):  # past the row counts where nn.Linear's kernels change (6, 16)
        others = torch.rand(mates, 784, generator=torch.Generator().manual_seed(mates))
        assert torch.equal(deterministic_probabilities(model, torch.cat([others, x]))[-rows:], alone)
        assert torch.equal(deterministic_probabilities(model, torch.cat([x, others]))[:rows], alone)
    with torch.inference_mode():
        forward = torch.softmax(model(x), dim=-1)
    assert torch.allclose(alone, forward, atol=1e-6)


def test_no_dropout_means_identical_passes():
    model = DropoutMLP(MLPSpec(hidden_sizes=(8,), input_dropout=0.0, hidden_dropout=0.0)).eval()
    logits = mc_dropout_logits(model, torch.rand(2, 784), 5, generator_for(0))
    assert torch.equal(logits[0], logits[4])


def test_samples_must_be_positive():
    with pytest.raises(ValueError):
        mc_dropout_logits(tiny_model(), torch.rand(1, 784), 0)


@pytest.mark.parametrize("width", [1, 7, 8, 9, 128, 1024])
def test_coins_are_seeded_shake_128_output_one_draw_at_a_time(width):
    generator = MaskGenerator(5)
    first, second = generator.coin_bytes(6, width), generator.coin_bytes(6, width)
    assert first.shape == (6, -(-width // 8))
    assert first.tobytes() == hashlib.shake_128(b"dropserve-coins:5:0").digest(first.size)
    assert second.tobytes() == hashlib.shake_128(b"dropserve-coins:5:1").digest(first.size)
    assert np.array_equal(MaskGenerator(5).coin_bytes(6, width), first)  # the same seed, the same coins
    assert not np.array_equal(MaskGenerator(6).coin_bytes(6, width), first)


@pytest.mark.parametrize("width", [7, 128])
def test_coin_j_of_a_row_is_bit_j_modulo_8_of_its_byte_j_over_8(width):
    coins = _coins(torch.Size((5, 3, width)), [generator_for(1)], [3])  # one draw of 15 rows
    octets = MaskGenerator(1).coin_bytes(15, width)
    expected = np.unpackbits(octets, axis=-1, count=width, bitorder="little").reshape(5, 3, width)
    assert coins.dtype == np.float32 and np.array_equal(coins, expected)


@pytest.mark.parametrize("width", [7, 128])
def test_rate_half_dropout_in_numpy_gives_the_products_of_the_torch_mask(width):
    # the CPU float32 path multiplies in numpy; other devices and dtypes take h * mask in torch
    h = torch.randn(5, 3, width, generator=torch.Generator().manual_seed(0))  # negatives too: signed zeros
    fast = _segment_dropout(h, 0.5, [generator_for(1), generator_for(2)], [1, 2])
    mask = _inverted_mask(h.shape, 0.5, [generator_for(1), generator_for(2)], [1, 2], h)
    assert set(mask.unique().tolist()) == {0.0, 2.0}
    assert torch.equal(fast, h * mask) and torch.equal(fast.signbit(), (h * mask).signbit())
    wide = _segment_dropout(h.double(), 0.5, [generator_for(1), generator_for(2)], [1, 2])  # torch path
    assert torch.equal(wide, h.double() * mask.double())


@pytest.mark.parametrize("rate", [0.0, 0.2, 0.5])
def test_dropout_on_copies_of_an_activation_equals_dropout_on_the_copies_made(rate):
    h = torch.randn(3, 16, generator=torch.Generator().manual_seed(0))  # (B, D)
    copies = _segment_dropout(h, rate, [generator_for(1), generator_for(2)], [1, 2], copies=5)
    made = _segment_dropout(h.expand(5, 3, 16), rate, [generator_for(1), generator_for(2)], [1, 2])
    assert copies.shape == (5, 3, 16)
    assert torch.equal(copies, made)


def test_dropout_keeps_half_the_units_at_rate_half_and_uses_the_uniform_draws_otherwise():
    h = torch.ones(400, 250)
    half = dropout_with_generator(h, 0.5, generator_for(0))
    assert set(half.unique().tolist()) == {0.0, 2.0}
    assert (half == 0).float().mean().item() == pytest.approx(0.5, abs=0.01)
    fifth = dropout_with_generator(h, 0.2, generator_for(0))
    assert (fifth == 0).float().mean().item() == pytest.approx(0.2, abs=0.01)
    assert torch.equal(fifth, dropout_with_generator(h, 0.2, generator_for(0)))
