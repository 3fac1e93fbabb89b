"""textgan.nets.discriminator and the cgan discriminator: shapes, features, projection, R1 double backward."""

import math

import pytest
import torch

from textgan.nets import CGANDiscriminator, Discriminator

C = 12


def tiny_d(arch, resolution=16, **kwargs):
    if arch == "stylegan2":
        kwargs = {"channel_base": 128, "channel_max": 16, **kwargs}
        return Discriminator(c_dim=C, img_resolution=resolution, **kwargs)
    kwargs = {"channel_base": 64, "channel_max": 16, **kwargs}
    return CGANDiscriminator(c_dim=C, img_resolution=resolution, **kwargs)


def _inputs(n, resolution, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, resolution, resolution, generator=g), torch.randn(n, C, generator=g)


@pytest.mark.parametrize("arch", ["stylegan2", "cgan"])
@pytest.mark.parametrize("resolution", [16, 32])
def test_logits_and_features_shapes(arch, resolution):
    torch.manual_seed(0)
    D = tiny_d(arch, resolution)
    img, c = _inputs(4, resolution)
    assert D.feature_dim == 16
    logits = D(img, c)
    logits2, features = D(img, c, return_features=True)
    assert logits.shape == (4, 1) and features.shape == (4, D.feature_dim)
    torch.testing.assert_close(logits2, logits)
    torch.testing.assert_close(D.features(img), features)
    assert torch.isfinite(logits).all()


def test_stylegan2_d_has_a_residual_block_per_halving():
    D = tiny_d("stylegan2", 64)
    assert len(D.blocks) == 4  # 64 -> 32 -> 16 -> 8 -> 4
    assert D.conv.weight.shape[1] == D.channels[4] + 1  # + the minibatch-stddev channel
    assert D.fc.weight.shape == (16, 16 * 4 * 4)


@pytest.mark.parametrize("arch", ["stylegan2", "cgan"])
def test_projection_head_formula(arch):
    """logits = out(f) + <proj(f), cmap(c)> / sqrt(cmap_dim): the text enters only through cmap."""
    torch.manual_seed(0)
    D = tiny_d(arch, cmap_dim=8)
    img, c1 = _inputs(4, 16)
    c2 = torch.randn(4, C)
    logits1, f = D(img, c1, return_features=True)
    logits2 = D(img, c2)
    head = D.head
    expected = (head.proj(f) * (head.cmap(c1) - head.cmap(c2))).sum(dim=1, keepdim=True) / math.sqrt(8)
    torch.testing.assert_close(logits1 - logits2, expected, atol=1e-5, rtol=1e-4)
    agreement1 = (head.proj(f) * head.cmap(c1)).sum(dim=1, keepdim=True)
    torch.testing.assert_close(logits1, head.out(f) + agreement1 / math.sqrt(8))
    assert not torch.allclose(logits1, logits2)


@pytest.mark.parametrize("arch", ["stylegan2", "cgan"])
def test_r1_double_backward_reaches_every_weight(arch):
    torch.manual_seed(0)
    D = tiny_d(arch)
    img, c = _inputs(4, 16)
    img.requires_grad_(True)
    (r1_grads,) = torch.autograd.grad(D(img, c).sum(), img, create_graph=True)
    r1_penalty = r1_grads.square().sum(dim=[1, 2, 3]).mean()
    r1_penalty.backward()
    assert r1_penalty.item() > 0
    # Biases of the piecewise-linear layers only move lrelu kinks, so their R1 grads may be zero (the
    # logits' constant offset gets none at all); every weight must receive a finite, nonzero grad.
    for name, p in D.named_parameters():
        assert p.grad is None or torch.isfinite(p.grad).all(), name
        if p.dim() >= 2:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert D.head.out.bias.grad is None


def test_minibatch_std_sees_the_batch():
    torch.manual_seed(0)
    D = tiny_d("stylegan2", mbstd_group_size=2)
    img, _ = _inputs(4, 16)
    other = img.clone()
    other[2] = torch.randn(3, 16, 16)  # sample 2 shares a group with sample 0 (groups: {0,2}, {1,3})
    with torch.no_grad():
        f, g = D.features(img), D.features(other)
    assert not torch.allclose(f[0], g[0])
    torch.testing.assert_close(f[1], g[1])


@pytest.mark.parametrize("arch", ["stylegan2", "cgan"])
def test_bad_inputs_are_named(arch):
    D = tiny_d(arch)
    img, c = _inputs(2, 16)
    with pytest.raises(ValueError, match=r"images must have shape \[N, 3, 16, 16\]"):
        D(img[:, :, :8, :8], c)
    with pytest.raises(ValueError, match=r"c must have shape \[2, 12\]"):
        D(img, c[:1])
    with pytest.raises(ValueError, match="mbstd_num_channels"):
        tiny_d("stylegan2", mbstd_num_channels=3)
