import pytest
import torch

from models.mc_dropout import (
    coin_bits,
    coin_bits_numpy,
    deterministic_probabilities,
    dropout_with_generator,
    generator_for,
    mc_dropout_logits,
    mc_dropout_probabilities,
)
from models.network import DropoutMLP
from models.spec import MLPSpec
from tests.conftest import tiny_model


def test_functional_dropout_matches_train_mode_nn_dropout_statistics():
    # Both zero a fraction `rate` and scale survivors by 1/(1-rate): the mean activation is kept.
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


def test_loop_gives_identical_samples_with_one_dropout_layer():
    # With one dropout layer the loop draws the masks in the same order as the batched methods.
    model = tiny_model()
    x = torch.rand(4, 784)
    shared = mc_dropout_logits(model, x, 10, generator_for(3), "shared_prefix")
    loop = mc_dropout_logits(model, x, 10, generator_for(3), "loop")
    assert torch.allclose(shared, loop, atol=1e-5)


def test_loop_matches_shared_prefix_in_distribution_with_several_dropout_layers():
    # Several dropout layers: the loop interleaves the layers' draws, so compare statistics.
    torch.manual_seed(0)
    model = DropoutMLP(MLPSpec(hidden_sizes=(32, 16), input_dropout=0.2)).eval()
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


def test_no_dropout_means_identical_passes():
    model = DropoutMLP(MLPSpec(hidden_sizes=(8,), input_dropout=0.0, hidden_dropout=0.0)).eval()
    logits = mc_dropout_logits(model, torch.rand(2, 784), 5, generator_for(0))
    assert torch.equal(logits[0], logits[4])


def test_samples_must_be_positive():
    with pytest.raises(ValueError):
        mc_dropout_logits(tiny_model(), torch.rand(1, 784), 0)


@pytest.mark.parametrize("width", [1, 63, 64, 128, 1024])
def test_numpy_bit_unpacking_matches_the_torch_shifts_used_off_cpu(width):
    words_per_row = -(-width // 63)
    words = torch.randint(0, 2**63 - 1, (7, 3, words_per_row), generator=torch.Generator().manual_seed(width))
    by_numpy = torch.from_numpy(coin_bits_numpy(words, width))
    assert by_numpy.shape == (7, 3, width)
    assert torch.equal(by_numpy.long(), coin_bits(words, width))
