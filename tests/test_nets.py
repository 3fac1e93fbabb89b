"""textgan.nets: build_networks for both architectures, the shared interface, DeepSpeed-friendly parameters."""

import copy

import pytest
import torch

from textgan.nets import ARCHS, CGANGenerator, Discriminator, Generator, build_networks

Z, C = 8, 12
TINY = {
    "stylegan2": dict(channel_base=128, channel_max=16, generator_kwargs=dict(w_dim=16, mapping_layers=2)),
    "cgan": dict(channel_base=64, channel_max=16),
}


def build(arch, resolution=16, **kwargs):
    torch.manual_seed(0)
    return build_networks(arch, z_dim=Z, c_dim=C, img_resolution=resolution, **{**TINY[arch], **kwargs})


def _inputs(n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, Z, generator=g), torch.randn(n, C, generator=g)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("resolution", [16, 32])
def test_both_archs_share_the_interface(arch, resolution):
    G, D = build(arch, resolution)
    assert (G.z_dim, G.c_dim, G.img_resolution, D.c_dim, D.img_resolution) == (Z, C, resolution, C, resolution)
    z, c = _inputs()
    img = G(z, c, psi=0.7, truncation_cutoff=None, noise_mode="const")  # cgan accepts and ignores these
    assert img.shape == (4, 3, resolution, resolution)
    logits, features = D(img, c, return_features=True)
    assert logits.shape == (4, 1) and features.shape == (4, D.feature_dim)


def test_build_networks_picks_the_classes_and_passes_options():
    G, D = build("stylegan2", size=0.5, discriminator_kwargs=dict(mbstd_group_size=2, cmap_dim=8))
    assert isinstance(G, Generator) and isinstance(D, Discriminator)
    assert G.synthesis.channels == {4: 8, 8: 8, 16: 4}  # half of {16, 16, 8}
    assert D.channels == G.synthesis.channels  # channel_base / channel_max / size shared by G and D
    assert (D.mbstd.group_size, D.head.cmap_dim, G.w_dim) == (2, 8, 16)
    G2, _ = build("cgan")
    assert isinstance(G2, CGANGenerator)
    with pytest.raises(ValueError, match=r"model.arch='stylegan3' is not one of \('stylegan2', 'cgan'\)"):
        build_networks("stylegan3", z_dim=Z, c_dim=C, img_resolution=16)


@pytest.mark.parametrize("arch", ARCHS)
def test_invalid_resolution_and_size_are_refused(arch):
    with pytest.raises(ValueError, match="16, 32, 64, 128, 256, 512, 1024"):
        build(arch, 48)
    with pytest.raises(ValueError, match="size"):
        build(arch, size=0)


@pytest.mark.parametrize("arch", ARCHS)
def test_no_zero_dimensional_parameters(arch):
    """DeepSpeed's initialize crashes on 0-dim parameters; scalars must be shape [1]."""
    G, D = build(arch)
    for net in (G, D):
        for name, p in net.named_parameters():
            assert p.dim() >= 1, name
    if arch == "stylegan2":
        assert G.synthesis.blocks[1].conv0.noise_strength.shape == (1,)


def test_cgan_generator_is_tanh_bounded_and_has_no_styles():
    G, D = build("cgan", 32, size=0.5)
    assert G.channels == {4: 8, 8: 4, 16: 2, 32: 1}  # half of 64 / r, capped at 16
    assert D.channels == G.channels
    z, c = _inputs()
    img = G(z, c)
    assert img.abs().max() <= 1.0
    # The text matters: same z, different c, different image.
    assert not torch.allclose(G(z, torch.randn(4, C)), img)
    with pytest.raises(ValueError, match="no styles"):
        G(z, c, return_ws=True)


@pytest.mark.parametrize("arch", ARCHS)
def test_deepcopy_keeps_outputs_and_buffers(arch):
    G, D = build(arch)
    G.eval()  # cgan: batch norm with running statistics, so both copies compute the same thing
    G_ema, D_copy = copy.deepcopy(G), copy.deepcopy(D)
    z, c = _inputs()
    with torch.no_grad():
        img = G(z, c, noise_mode="const")
        torch.testing.assert_close(G_ema(z, c, noise_mode="const"), img)
        torch.testing.assert_close(D_copy(img, c), D(img, c))
    assert G_ema.state_dict().keys() == G.state_dict().keys()
    assert all(a is not b for a, b in zip(G_ema.parameters(), G.parameters()))
