"""textgan.nets.generator: StyleGAN2 generator shapes, mapping, truncation, style mixing, noise, double backward."""

import copy
import math

import pytest
import torch

from textgan.nets import Generator, mix_styles

Z, C, W = 8, 12, 16


def tiny_generator(resolution=16, **kwargs):
    kwargs = {"channel_base": 128, "channel_max": 16, "mapping_layers": 2, **kwargs}
    return Generator(z_dim=Z, c_dim=C, w_dim=W, img_resolution=resolution, **kwargs)


@pytest.fixture(scope="module")
def G():
    torch.manual_seed(0)
    G = tiny_generator()
    with torch.no_grad():  # trained-like noise strengths and w_avg, so noise modes and truncation show
        for name, p in G.named_parameters():
            if name.endswith("noise_strength"):
                p.fill_(0.5)
        G.mapping.w_avg.normal_()
    return G


def _inputs(n=3, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, Z, generator=g), torch.randn(n, C, generator=g)


@pytest.mark.parametrize("resolution", [16, 32, 64])
def test_output_shape_and_num_ws(resolution):
    G = tiny_generator(resolution)
    z, c = _inputs(2)
    img, ws = G(z, c, return_ws=True)
    num_ws = 2 * int(math.log2(resolution)) - 2  # 2 per resolution from 8, 1 at 4x4, +1 for the last ToRGB
    assert G.num_ws == num_ws
    assert ws.shape == (2, num_ws, W)
    assert img.shape == (2, 3, resolution, resolution)
    assert torch.isfinite(img).all()


def test_1024_builds_all_resolutions():
    G = tiny_generator(1024, channel_base=64, channel_max=4)
    assert G.num_ws == 18
    assert [b.resolution for b in G.synthesis.blocks] == [4, 8, 16, 32, 64, 128, 256, 512, 1024]
    assert G.synthesis.blocks[-1].conv1.noise_const.shape == (1, 1, 1024, 1024)


@pytest.mark.parametrize("resolution", [4, 8, 48, 100, 2048, 32.0])
def test_unsupported_resolution_names_the_allowed_ones(resolution):
    with pytest.raises(ValueError, match=r"img_resolution=.*16, 32, 64, 128, 256, 512, 1024"):
        tiny_generator(resolution)


def test_size_multiplier_scales_every_width():
    full, half = tiny_generator(32, size=1.0), tiny_generator(32, size=0.5)
    assert full.synthesis.channels == {4: 16, 8: 16, 16: 8, 32: 4}
    assert half.synthesis.channels == {4: 8, 8: 8, 16: 4, 32: 2}
    assert half.synthesis.blocks[0].const.shape == (8, 4, 4)
    assert half.synthesis.blocks[-1].conv1.conv.weight.shape == (2, 2, 3, 3)
    assert tiny_generator(32, size=0.8).synthesis.channels[4] == 13  # round(16 * 0.8)


def test_mapping_uses_lr_mul_001():
    G = Generator(z_dim=64, c_dim=32, w_dim=64, img_resolution=16, channel_base=64, channel_max=4, mapping_layers=2)
    first = G.mapping.layers[0]
    assert first.weight_gain == pytest.approx(0.01 / math.sqrt(64 + 64))
    assert first.weight.std().item() == pytest.approx(100.0, rel=0.05)
    assert G.mapping.embed.weight_gain == pytest.approx(1 / math.sqrt(32))  # the text embedding: lr_mul 1


def test_bad_inputs_are_named():
    G = tiny_generator()
    z, c = _inputs(2)
    with pytest.raises(ValueError, match=r"c must have shape \[2, 12\]"):
        G(z, c[:, :5])
    with pytest.raises(ValueError, match="noise_mode"):
        G(z, c, noise_mode="fixed")
    with pytest.raises(ValueError, match=r"ws must have shape \[N, 6, 16\]"):
        G.synthesis(torch.zeros(2, 5, W))


# ------------------------------------------------------------------ w_avg and truncation


def test_w_avg_is_tracked_with_beta():
    G = tiny_generator(w_avg_beta=0.9)
    z, c = _inputs(4)
    ws = G.mapping(z, c, update_w_avg=True)
    torch.testing.assert_close(G.mapping.w_avg, 0.1 * ws[:, 0].mean(dim=0).detach())
    assert "mapping.w_avg" in G.state_dict()


def test_truncation_psi_0_gives_the_average_and_psi_1_changes_nothing(G):
    z, c = _inputs(3)
    ws = G.mapping(z, c)
    torch.testing.assert_close(G.mapping(z, c, psi=1.0), ws)
    at_avg = G.mapping(z, c, psi=0.0)
    torch.testing.assert_close(at_avg, G.mapping.w_avg.expand(3, G.num_ws, W))
    half = G.mapping(z, c, psi=0.5, truncation_cutoff=2)
    torch.testing.assert_close(half[:, :2], (ws[:, :2] + G.mapping.w_avg) / 2)
    torch.testing.assert_close(half[:, 2:], ws[:, 2:])


def test_conditional_average_is_the_seeded_mean_w_of_that_text(G):
    _, c = _inputs(2)
    averages = G.conditional_w_avg(c, num_samples=300, seed=5)
    assert averages.shape == (2, W)
    z = torch.randn(300, Z, generator=torch.Generator().manual_seed(5))
    expected = G.mapping(z, c[1].expand(300, -1))[:, 0].mean(dim=0)
    torch.testing.assert_close(averages[1], expected.detach(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(G.conditional_w_avg(c[1], num_samples=300, seed=5), averages[1])
    # Different texts, different centres (the spread of w itself is ~1).
    assert (averages[0] - averages[1]).norm() > 0.1 * averages.norm(dim=1).mean()


def test_truncation_toward_the_conditional_average(G):
    z, _ = _inputs(3)
    c = _inputs(1, seed=7)[1].expand(3, -1)
    centre = G.conditional_w_avg(c[:1], num_samples=64)  # [1, w_dim] broadcasts over the batch
    ws = G.mapping(z, c, psi=0.0, w_avg=centre)
    torch.testing.assert_close(ws, centre[:, None].expand(3, G.num_ws, W))
    # At psi=0 every z gives the same image for that text.
    with torch.no_grad():
        img = G(z, c, psi=0.0, w_avg=centre, noise_mode="const")
    torch.testing.assert_close(img[0], img[2])


# ------------------------------------------------------------------ style mixing, noise


def test_mix_styles_takes_rows_before_the_cutoff_from_the_first():
    G = tiny_generator()
    z1, c = _inputs(2, seed=1)
    z2, _ = _inputs(2, seed=2)
    ws1, ws2 = G.mapping(z1, c), G.mapping(z2, c)
    mixed = mix_styles(ws1, ws2, 4)
    torch.testing.assert_close(mixed[:, :4], ws1[:, :4])
    torch.testing.assert_close(mixed[:, 4:], ws2[:, 4:])
    assert not torch.allclose(ws1[:, 4], ws2[:, 4])


def test_style_mixing_helper_is_seeded_and_switches_once(G):
    z, c = _inputs(2)
    ws = G.mapping(z, c)
    mixed = G.style_mixing(ws, c, prob=1.0, generator=torch.Generator().manual_seed(3))
    same_as_ws = [torch.equal(mixed[:, i], ws[:, i]) for i in range(G.num_ws)]
    cutoff = same_as_ws.index(False)
    assert cutoff >= 1 and not any(same_as_ws[cutoff:])  # rows [0, cutoff) from z, the rest from new z
    assert all(torch.equal(mixed[:, i], mixed[:, cutoff]) for i in range(cutoff, G.num_ws))
    again = G.style_mixing(ws, c, prob=1.0, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(again, mixed)
    assert G.style_mixing(ws, c, prob=0.0) is ws


def test_noise_modes(G):
    z, c = _inputs(2)
    with torch.no_grad():
        const1, const2 = G(z, c, noise_mode="const"), G(z, c, noise_mode="const")
        rand1 = G(z, c, generator=torch.Generator().manual_seed(0))
        rand2 = G(z, c, generator=torch.Generator().manual_seed(0))
        rand3 = G(z, c, generator=torch.Generator().manual_seed(1))
        none = G(z, c, noise_mode="none")
    torch.testing.assert_close(const1, const2)
    torch.testing.assert_close(rand1, rand2)
    assert not torch.allclose(rand1, rand3)
    assert not torch.allclose(const1, none)


def test_deepcopy_gives_an_independent_equal_generator(G):
    G_ema = copy.deepcopy(G)
    z, c = _inputs(2)
    with torch.no_grad():
        torch.testing.assert_close(G_ema(z, c, noise_mode="const"), G(z, c, noise_mode="const"))
        G_ema.synthesis.blocks[0].const.add_(1.0)
    assert not torch.equal(G_ema.synthesis.blocks[0].const, G.synthesis.blocks[0].const)
    keys = G.state_dict().keys()
    assert "synthesis.blocks.1.conv0.noise_const" in keys
    assert not any(k.endswith("resample_filter") for k in keys)  # constants stay out of checkpoints


def test_path_length_double_backward_through_synthesis():
    torch.manual_seed(0)
    G = tiny_generator(16)
    z, c = _inputs(2)
    ws = G.mapping(z, c)
    img = G.synthesis(ws, generator=torch.Generator().manual_seed(0))
    pl_noise = torch.randn_like(img) / 16
    (pl_grads,) = torch.autograd.grad((img * pl_noise).sum(), ws, create_graph=True)
    pl_lengths = pl_grads.square().sum(dim=2).mean(dim=1).sqrt()
    (pl_lengths - 1.0).square().mean().backward()
    # ToRGB biases only shift the image, so d img / d ws ignores them; every other parameter gets a grad.
    # (A training step that must touch all parameters adds img * 0 to its loss, as StyleGAN2-ADA does.)
    without_grad = {name for name, p in G.named_parameters() if p.grad is None}
    assert without_grad == {f"synthesis.blocks.{i}.torgb.bias" for i in range(3)}
    for name, p in G.named_parameters():
        assert p.grad is None or torch.isfinite(p.grad).all(), name
    assert G.synthesis.blocks[1].conv0.conv.weight.grad.abs().sum() > 0
    assert G.mapping.layers[0].weight.grad.abs().sum() > 0


def test_style_mixing_runs_the_second_mapping_even_when_it_does_not_mix(G):
    # Under ZeRO-3 every rank must run the same modules: the draw "mix or not" differs between ranks,
    # so the second mapping has to run either way (StyleGAN2-ADA does the same).
    z, c = _inputs(2)
    ws = G.mapping(z, c)
    calls = []
    handle = G.mapping.register_forward_hook(lambda module, args, out: calls.append(args[0].shape))
    try:
        kept = G.style_mixing(ws, c, prob=1e-12, generator=torch.Generator().manual_seed(3))
        assert calls == [torch.Size([2, Z])]  # ran, on fresh latents of the batch's size
        torch.testing.assert_close(kept, ws)  # but kept every style of ws
        calls.clear()
        with torch.no_grad():
            G(z, c, style_mixing_prob=1e-12)
        assert len(calls) == 2
        calls.clear()
        G.style_mixing(ws, c, prob=0.0)  # a setting (the same on every rank): no second mapping
        assert calls == []
    finally:
        handle.remove()


def test_w_avg_update_with_bf16_parameters_and_an_fp32_buffer():
    # What DeepSpeed's bf16 mode leaves behind: parameters cast to bf16, buffers (w_avg) still fp32.
    torch.manual_seed(0)
    G = tiny_generator(w_avg_beta=0.9)
    for p in G.parameters():
        p.data = p.data.to(torch.bfloat16)
    assert G.mapping.w_avg.dtype == torch.float32
    z, c = (t.to(torch.bfloat16) for t in _inputs(4))
    with torch.no_grad():
        img, ws = G(z, c, update_w_avg=True, noise_mode="const", return_ws=True)
        truncated = G(z, c, psi=0.5, noise_mode="const")  # lerp toward the fp32 w_avg works too
    assert img.dtype == ws.dtype == truncated.dtype == torch.bfloat16
    assert torch.isfinite(img).all() and torch.isfinite(truncated).all()
    w_avg = G.mapping.w_avg
    assert w_avg.dtype == torch.float32 and torch.isfinite(w_avg).all()
    # From zero: w_avg = (1 - beta) * batch mean of w, the mean taken in fp32.
    torch.testing.assert_close(w_avg, 0.1 * ws[:, 0].float().mean(dim=0))
    assert w_avg.abs().sum() > 0
