import numpy as np
import pytest
import torch
import torch.nn.functional as F

from models import _kernels
from models.mc_dropout import MaskSource, dropout, mc_dropout_chunks, mc_dropout_logits, predict_logits
from models.network import DropoutMLP, Weights
from models.spec import MLPSpec
from tests.conftest import tiny_model


@pytest.mark.parametrize("rate", [0.1, 0.2, 0.5, 0.7])
def test_masks_drop_the_rate_and_keep_the_mean(rate):
    h = torch.rand(200, 500) + 0.5  # 100k units: the bounds below are several standard errors
    out = dropout(h, rate, MaskSource(0))
    assert (out == 0).float().mean().item() == pytest.approx(rate, abs=0.01)
    assert out.mean().item() == pytest.approx(h.mean().item(), rel=0.02)
    kept = out != 0
    assert torch.allclose(out[kept], h[kept] / (1 - rate))


def test_the_same_seed_gives_the_same_masks_and_another_seed_others():
    assert np.array_equal(MaskSource(7).keep((3, 64), 0.5), MaskSource(7).keep((3, 64), 0.5))
    assert not np.array_equal(MaskSource(7).keep((3, 64), 0.5), MaskSource(8).keep((3, 64), 0.5))


def test_masks_are_a_fixed_function_of_the_seed():
    # Philox is counter-based and portable: these bits are the same on every CPU and numpy build.
    kept = MaskSource(42).keep((2, 8), 0.5)
    assert kept.dtype == bool and kept.shape == (2, 8)
    assert kept.tobytes() == MaskSource(42).keep((16,), 0.5).tobytes()  # drawn in row-major order


def test_same_seed_same_passes_and_different_seed_different_passes():
    model = tiny_model()
    x = torch.rand(3, 784)
    a = mc_dropout_logits(model, x, 20, MaskSource(7))
    b = mc_dropout_logits(model, x, 20, MaskSource(7))
    c = mc_dropout_logits(model, x, 20, MaskSource(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert a.shape == (20, 3, 10)


def test_model_stays_in_eval_mode_and_passes_vary():
    model = tiny_model()
    logits = mc_dropout_logits(model, torch.rand(2, 784), 50, MaskSource(0))
    assert not model.training
    assert logits.std(0).max() > 0  # dropout really was applied


@pytest.mark.parametrize("hidden_dropout", [0.5, 0.25, 0.3, 0.0])  # 1, 8, 16 bits a unit; no draw
@pytest.mark.parametrize("input_dropout", [0.0, 0.2])
@pytest.mark.parametrize("hidden_sizes", [(32,), (32, 16)])
def test_shared_prefix_equals_full_passes_with_the_same_masks(hidden_sizes, input_dropout, hidden_dropout):
    # The shared prefix skips only deterministic work, and the compiled last layer draws the masks
    # `dropout` would: full passes of torch calls drawing the same masks in the same order give the
    # same logits (up to the order of the output layer's sums).
    torch.manual_seed(0)
    spec = MLPSpec(hidden_sizes=hidden_sizes, input_dropout=input_dropout, hidden_dropout=hidden_dropout)
    model = DropoutMLP(spec).eval()
    x = torch.rand(4, 784)
    shared = mc_dropout_logits(model, x, 10, MaskSource(3))
    masks = MaskSource(3)
    h = dropout(model.normalize(x).expand(10, 4, 784), input_dropout, masks)
    for index in range(len(hidden_sizes)):
        h = dropout(model.hidden_layer(index, h), hidden_dropout, masks)
    with torch.no_grad():
        full = model.output(h)
    torch.testing.assert_close(shared, full)
    if hidden_dropout > 0:
        assert shared.std(0).max() > 0


def test_many_passes_run_in_chunks_of_bounded_size():
    model = DropoutMLP(MLPSpec(hidden_sizes=(1024, 1024), input_dropout=0.2)).eval()
    chunks = list(mc_dropout_chunks(model, torch.rand(300, 784), 20, MaskSource(0)))
    assert len(chunks) > 1
    assert sum(len(c) for c in chunks) == 20
    assert max(c.size // 10 * 1024 for c in chunks) <= 1 << 20  # passes x rows x widest layer


def test_deterministic_prediction_is_the_eval_forward():
    model = tiny_model()
    x = torch.rand(5, 784)
    with torch.no_grad():
        assert torch.equal(predict_logits(model, x), model(x))
        assert torch.equal(predict_logits(Weights.of(model), x), model(x))  # what the service holds


def test_weights_share_the_module_s_storage():
    # Inference reads Weights taken once; training changes the module's parameters in place.
    model = tiny_model()
    weights = Weights.of(model)
    x = torch.rand(3, 784)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.mul_(1.5)
        assert torch.equal(predict_logits(weights, x), model(x))
    assert torch.equal(
        mc_dropout_logits(weights, x, 5, MaskSource(1)), mc_dropout_logits(model, x, 5, MaskSource(1))
    )


def test_no_samples_is_refused():
    with pytest.raises(ValueError):
        mc_dropout_logits(tiny_model(), torch.rand(1, 784), 0, MaskSource(0))


def test_masks_are_one_philox_stream_keyed_by_the_seed():
    # At rate 0.5 a unit is one bit of numpy's own Philox(key=seed) stream, kept when set; each draw
    # starts at a fresh block of 256 bits.
    masks = MaskSource(123)
    first, second = masks.keep((3, 10), 0.5), masks.keep((5,), 0.5)
    words = np.random.Philox(key=123).random_raw(8)
    bits = np.unpackbits(words.view(np.uint8), bitorder="little").astype(bool)
    assert np.array_equal(np.concatenate([first.ravel(), second]), np.concatenate([bits[:30], bits[256:261]]))


@pytest.mark.parametrize(("rate", "dtype"), [(0.25, np.uint8), (0.2, np.uint16)])
def test_other_rates_draw_8_bits_when_exact_and_16_otherwise(rate, dtype):
    # A unit is dropped when its draw is below round(rate * 2^bits).
    kept = MaskSource(5).keep((40,), rate)
    draws = np.random.Philox(key=5).random_raw(12).view(dtype)[:40]
    threshold = round(rate * (np.iinfo(dtype).max + 1))
    assert np.array_equal(kept, draws >= threshold)


# The last: the counter carries past 64 bits within the six blocks.
@pytest.mark.parametrize(("key", "first_block"), [(0, 0), (123, 5), (2**63 - 1, 2**64 - 2)])
def test_the_compiled_philox_is_numpy_s(key, first_block):
    words = np.empty(6 * 32, dtype=np.uint8)
    _kernels.philox(key, first_block, words)
    numpy_philox = np.random.Philox(counter=first_block, key=key)
    assert np.array_equal(words.view(np.uint64), numpy_philox.random_raw(24))


def test_the_compiled_output_layer_refuses_arrays_that_disagree():
    h, weight, bias = np.zeros((2, 8), np.float32), np.zeros((10, 8), np.float32), np.zeros(10, np.float32)
    logits = np.empty((3, 2, 10), np.float32)
    _kernels.masked_output(h, weight, bias, logits, 2.0, 0, 0, 1, 1)  # agree
    with pytest.raises(ValueError):
        _kernels.masked_output(h, weight[:, :7], bias, logits, 2.0, 0, 0, 1, 1)
    with pytest.raises(ValueError):
        _kernels.masked_output(h.astype(np.float64), weight, bias, logits, 2.0, 0, 0, 1, 1)
    with pytest.raises(ValueError):
        _kernels.masked_output(h, weight, bias, logits, 2.0, 0, 0, 4, 1)  # no such draw size


@pytest.mark.parametrize("rate", [0.5, 0.25, 0.3, 0.0])  # 1, 8, 16 bits a unit; no draw
@pytest.mark.parametrize("shared", [True, False])
def test_the_compiled_output_layer_is_dropout_then_linear(rate, shared):
    # 99 units: a pass's mask bits straddle the stream's 64-bit words, and the last group of 4 units
    # (the shared passes' table) is short; 20 classes: two blocks of lanes.
    generator = torch.Generator().manual_seed(0)
    weight, bias = torch.randn(20, 99, generator=generator), torch.randn(20, generator=generator)
    h = torch.randn(*((3,) if shared else (7, 3)), 99, generator=generator)  # (B, D) or (T, B, D)
    expected = F.linear(dropout(h, rate, MaskSource(9), 7 if shared else None), weight, bias)  # (7, 3, 20)
    logits = np.empty((7, 3, 20), np.float32)
    first, bits, threshold = MaskSource(9).draw(7 * 3 * 99, rate)
    scale = 1.0 / (1.0 - rate)
    _kernels.masked_output(h.numpy(), weight.numpy(), bias.numpy(), logits, scale, 9, first, bits, threshold)
    torch.testing.assert_close(torch.from_numpy(logits), expected)


@pytest.mark.parametrize("seed", [-1, 2**64])
def test_a_seed_outside_the_generator_s_64_bit_key_is_refused(seed):
    with pytest.raises(ValueError, match="64-bit"):
        MaskSource(seed)
