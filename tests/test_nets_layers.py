"""textgan.nets.layers: equalized learning rate, FIR resampling, modulated conv, minibatch stddev."""

import math

import pytest
import torch
import torch.nn.functional as F

from textgan.nets.layers import (
    EqualConv2d,
    EqualLinear,
    MinibatchStd,
    ModulatedConv2d,
    bias_act,
    conv2d_resample,
    downsample2d,
    fir_filter,
    upsample2d,
)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# ------------------------------------------------------------------ equalized learning rate


def test_equal_linear_uses_stored_weight_times_lr_mul_over_sqrt_fan_in():
    layer = EqualLinear(5, 3, bias_init=0.5, lr_mul=0.01)
    assert layer.weight_gain == pytest.approx(0.01 / math.sqrt(5))
    # The identity as input reads the effective weight (transposed) plus bias out of the layer.
    out = layer(torch.eye(5))
    expected = (layer.weight * 0.01 / math.sqrt(5)).t() + layer.bias * 0.01
    torch.testing.assert_close(out, expected)
    # Stored bias is bias_init / lr_mul, so the effective bias starts at bias_init.
    torch.testing.assert_close(layer.bias * 0.01, torch.full([3], 0.5))


@pytest.mark.parametrize("lr_mul", [1.0, 0.01])
def test_equal_linear_stores_unit_gaussian_over_lr_mul(lr_mul):
    layer = EqualLinear(512, 256, lr_mul=lr_mul)
    std = layer.weight.std().item()
    assert std == pytest.approx(1.0 / lr_mul, rel=0.02)
    assert abs(layer.weight.mean().item()) < 0.02 / lr_mul
    # Effective weights have std 1/sqrt(fan_in) whatever lr_mul is.
    assert (layer.weight * layer.weight_gain).std().item() == pytest.approx(1 / math.sqrt(512), rel=0.02)


def test_equal_linear_lrelu_has_gain_sqrt2():
    layer = EqualLinear(4, 6, activation="lrelu")
    x = torch.randn(3, 4)
    pre = F.linear(x, layer.weight / 2, layer.bias)
    torch.testing.assert_close(layer(x), F.leaky_relu(pre, 0.2) * math.sqrt(2))
    torch.testing.assert_close(bias_act(torch.tensor([[-1.0, 2.0]]), None, "lrelu"),
                               torch.tensor([[-0.2, 2.0]]) * math.sqrt(2))


def test_equal_conv2d_effective_weight_read_with_a_delta_image():
    layer = EqualConv2d(2, 4, 3)
    with torch.no_grad():
        layer.bias.copy_(torch.arange(4.0))
    gain = 1 / math.sqrt(2 * 3 * 3)
    assert layer.weight_gain == pytest.approx(gain)
    x = torch.zeros(1, 2, 5, 5)
    x[0, 1, 2, 2] = 1.0  # a delta in input channel 1
    out = layer(x)[0]
    # conv2d correlates: around the delta the output is the (flipped) kernel of channel 1, plus bias.
    expected = (layer.weight[:, 1] * gain).flip([1, 2]) + torch.arange(4.0)[:, None, None]
    torch.testing.assert_close(out[:, 1:4, 1:4], expected)
    torch.testing.assert_close(out[:, 0, 0], torch.arange(4.0))  # far from the delta: bias only


def test_equal_conv2d_matches_plain_conv_with_scaled_weight():
    layer = EqualConv2d(3, 5, 3, activation="lrelu", lr_mul=0.5)
    x = torch.randn(2, 3, 8, 8)
    w = layer.weight * 0.5 / math.sqrt(27)
    ref = F.leaky_relu(F.conv2d(x, w, layer.bias * 0.5, padding=1), 0.2) * math.sqrt(2)
    torch.testing.assert_close(layer(x), ref)
    assert layer.weight.std().item() == pytest.approx(2.0, rel=0.2)  # 1/lr_mul


# ------------------------------------------------------------------ FIR resampling


def test_fir_upsample_equals_bilinear_away_from_the_border():
    x = torch.randn(2, 3, 8, 8)
    up = upsample2d(x, fir_filter())
    assert up.shape == (2, 3, 16, 16)
    ref = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
    torch.testing.assert_close(up[..., 1:-1, 1:-1], ref[..., 1:-1, 1:-1])


def test_fir_downsample_weights_the_4x4_neighbourhood_1_3_3_1():
    x = torch.randn(1, 1, 8, 8)
    down = downsample2d(x, fir_filter())
    assert down.shape == (1, 1, 4, 4)
    taps = torch.tensor([1.0, 3.0, 3.0, 1.0])
    kernel = torch.outer(taps, taps) / 64
    i, j = 1, 2  # output (i, j) sits between input pixels 2i, 2i+1 and 2j, 2j+1
    expected = (x[0, 0, 2 * i - 1 : 2 * i + 3, 2 * j - 1 : 2 * j + 3] * kernel).sum()
    torch.testing.assert_close(down[0, 0, i, j], expected)
    # A constant image stays constant away from the zero-padded border.
    torch.testing.assert_close(downsample2d(torch.ones(1, 1, 8, 8), fir_filter())[..., 1:-1, 1:-1],
                               torch.ones(1, 1, 2, 2))


def test_resampling_convs_equal_resample_then_conv_in_the_interior():
    f = fir_filter()
    x, w = torch.randn(2, 3, 8, 8), torch.randn(4, 3, 3, 3)
    up = conv2d_resample(x, w, f, up=2)
    ref_up = F.conv2d(upsample2d(x, f), w, padding=1)
    assert up.shape == (2, 4, 16, 16)
    torch.testing.assert_close(up[..., 2:-2, 2:-2], ref_up[..., 2:-2, 2:-2], atol=1e-5, rtol=1e-5)
    down = conv2d_resample(x, w, f, down=2)
    ref_down = downsample2d(F.conv2d(x, w, padding=1), f)
    assert down.shape == (2, 4, 4, 4)
    torch.testing.assert_close(down[..., 1:-1, 1:-1], ref_down[..., 1:-1, 1:-1], atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------ modulated conv


def _slow_modulated_conv(layer, x, w):
    """Reference: one explicit modulated (and demodulated) weight per sample, one conv per sample."""
    styles = layer.affine(w)
    outs = []
    for i in range(x.shape[0]):
        weight = layer.weight * layer.weight_gain * styles[i][None, :, None, None]
        if layer.demodulate:
            weight = weight / (weight.square().sum(dim=[1, 2, 3], keepdim=True) + 1e-8).sqrt()
        outs.append(conv2d_resample(x[i : i + 1], weight, layer.resample_filter, up=layer.up))
    return torch.cat(outs)


@pytest.mark.parametrize("up,demodulate", [(1, True), (2, True), (1, False)])
def test_modulated_conv_equals_per_sample_weights(up, demodulate):
    layer = ModulatedConv2d(6, 5, 3, w_dim=8, demodulate=demodulate, up=up)
    with torch.no_grad():  # non-trivial styles (the affine starts near 1)
        layer.affine.weight.mul_(3.0)
    x, w = torch.randn(3, 6, 8, 8), torch.randn(3, 8)
    out = layer(x, w)
    assert out.shape == (3, 5, 8 * up, 8 * up)
    torch.testing.assert_close(out, _slow_modulated_conv(layer, x, w), atol=1e-5, rtol=1e-4)


def test_demodulation_gives_unit_variance_outputs_for_unit_variance_inputs():
    layer = ModulatedConv2d(64, 16, 3, w_dim=8)
    with torch.no_grad():  # styles far from 1: without demodulation the output scale would follow them
        layer.affine.weight.mul_(5.0)
    x, w = torch.randn(4, 64, 32, 32), torch.randn(4, 8)
    with torch.no_grad():
        out = layer(x, w)[..., 1:-1, 1:-1]  # the zero-padded border has fewer terms
        plain = ModulatedConv2d(64, 16, 3, w_dim=8, demodulate=False)
        plain.load_state_dict(layer.state_dict())
        plain_std = plain(x, w).std().item()
    per_channel_std = out.std(dim=[2, 3])  # [N, out]
    assert out.std().item() == pytest.approx(1.0, abs=0.05)
    assert per_channel_std.min() > 0.8 and per_channel_std.max() < 1.2
    assert not 0.8 < plain_std < 1.2  # the property comes from demodulation, not from the init


# ------------------------------------------------------------------ minibatch stddev


def test_minibatch_std_appends_group_std_per_sample():
    x = torch.randn(4, 6, 3, 3)
    out = MinibatchStd(group_size=2, num_channels=1)(x)
    assert out.shape == (4, 7, 3, 3)
    # Samples i and i + 2 form a group (N / G = 2 groups).
    for i in range(4):
        pair = torch.stack([x[i % 2], x[i % 2 + 2]])
        expected = (pair.var(dim=0, unbiased=False) + 1e-8).sqrt().mean()
        torch.testing.assert_close(out[i, 6], torch.full([3, 3], expected.item()))
    torch.testing.assert_close(out[:, :6], x)


def test_minibatch_std_uses_the_largest_group_dividing_the_batch():
    x = torch.randn(6, 4, 2, 2)
    out = MinibatchStd(group_size=4, num_channels=2)(x)  # 6 is not divisible by 4: groups of 3
    assert out.shape == (6, 6, 2, 2)
    trio = x[[0, 2, 4]]  # group of sample 0 when there are 6 / 3 = 2 groups
    std = (trio.var(dim=0, unbiased=False) + 1e-8).sqrt()  # [4, 2, 2]
    torch.testing.assert_close(out[0, 4:, 0, 0], torch.stack([std[:2].mean(), std[2:].mean()]))
