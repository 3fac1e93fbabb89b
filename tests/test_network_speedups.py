"""The faster paths of the networks and of the path-length phase compute what the earlier ones did.

- D's 1x1 downsampling skip filters down first and convolves at half resolution: the same linear map as the
  1x1 conv strided over the full-resolution filtered map (computed here by hand from the layer's weights).
- A synthesis layer adds its noise in the same pass as demodulation (torch.addcmul): the same output as
  demodulating and then adding, with constant noise and with seeded random noise.
- loss.pl_batch_shrink: the path-length phase runs G on batch // shrink samples (at least 1); with 1 it is the
  old full-batch penalty.
set_unfused_reference (benchmarks/bench_networks.py measures against it) must run the earlier order.
"""

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from test_objective import setup
from textgan.config import LossConfig, load_config
from textgan.errors import UsageError
from textgan.losses import GANObjective
from textgan.losses.phases import PhaseInputs
from textgan.losses.regularizers import path_length_penalty
from textgan.nets import build_networks
from textgan.nets.discriminator import DiscriminatorBlock
from textgan.nets.layers import EqualConv2d, SynthesisLayer, bias_act, downsample2d, fir_filter, set_unfused_reference

REQUIRED = ["data.shards=shards/x", "data.resolution=32"]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _tiny_networks():
    return build_networks("stylegan2", z_dim=8, c_dim=6, img_resolution=32, channel_base=256, channel_max=16,
                          generator_kwargs=dict(w_dim=8, mapping_layers=2),
                          discriminator_kwargs=dict(mbstd_group_size=2))


# ------------------------------------------------------------------ D's 1x1 skip


def _strided_skip_by_hand(layer: EqualConv2d, x: torch.Tensor) -> torch.Tensor:
    """The earlier order: pad by 1, the [1, 3, 3, 1] low-pass on every full-resolution pixel of every channel,
    then the 1x1 conv with stride 2 (keeping one filtered pixel in four)."""
    channels = x.shape[1]
    taps = torch.tensor([1.0, 3.0, 3.0, 1.0])
    low_pass = (torch.outer(taps, taps) / 64).expand(channels, 1, 4, 4)
    filtered = F.conv2d(F.pad(x, [1, 1, 1, 1]), low_pass, groups=channels)
    assert filtered.shape[-1] == x.shape[-1] - 1  # full resolution (less the filter's one-pixel overhang)
    return F.conv2d(filtered, layer.weight * layer.weight_gain, stride=2)


def test_the_skip_filters_down_first_and_equals_the_strided_order_by_hand():
    block = DiscriminatorBlock(6, 10)
    x = torch.randn(3, 6, 16, 16)
    expected = _strided_skip_by_hand(block.skip, x)
    assert expected.shape == (3, 10, 8, 8)
    torch.testing.assert_close(block.skip(x), expected, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(set_unfused_reference(block).skip(x), expected, atol=1e-6, rtol=1e-6)


def test_the_skip_orders_give_the_same_gradients_and_second_derivatives():
    """R1 differentiates D twice w.r.t. its input: both orders must agree there too."""
    layer = EqualConv2d(4, 8, 1, bias=False, down=2)
    x = torch.randn(2, 4, 8, 8)
    derivatives = {}
    for unfused in (False, True):
        set_unfused_reference(layer, unfused)
        layer.weight.grad = None
        xi = x.clone().requires_grad_(True)
        (grad_x,) = torch.autograd.grad(layer(xi).square().sum(), xi, create_graph=True)
        grad_x.square().sum().backward()
        derivatives[unfused] = (grad_x.detach(), layer.weight.grad.clone())
    for fast, reference in zip(derivatives[False], derivatives[True]):
        torch.testing.assert_close(fast, reference, atol=1e-5, rtol=1e-5)


def test_downsampling_computes_only_the_kept_pixels_of_the_filtered_map():
    x = torch.randn(2, 3, 12, 12)
    full = F.conv2d(F.pad(x, [1, 1, 1, 1]), fir_filter().expand(3, 1, 4, 4), groups=3)
    torch.testing.assert_close(downsample2d(x, fir_filter()), full[:, :, ::2, ::2], atol=1e-6, rtol=1e-6)


def test_whole_discriminators_agree_in_both_orders():
    _, D = _tiny_networks()
    img, c = torch.randn(4, 3, 32, 32), torch.randn(4, 6)
    fast = D(img, c)
    reference = set_unfused_reference(D)(img, c)
    torch.testing.assert_close(fast, reference, atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------ noise fused with demodulation


def _synthesis_layer(up=1):
    layer = SynthesisLayer(5, 7, w_dim=8, resolution=8, up=up)
    with torch.no_grad():  # the noise starts switched off (strength 0); give it weight, and a bias
        layer.noise_strength.fill_(0.7)
        layer.bias.normal_()
        layer.conv.affine.weight.normal_()
    return layer


def _demodulate_then_add_by_hand(layer, x, w, noise):
    """The earlier two passes: demodulated conv output, then + noise * strength, then bias and lrelu."""
    return bias_act(layer.conv(x, w) + noise * layer.noise_strength, layer.bias, "lrelu")


@pytest.mark.parametrize("up", [1, 2])
def test_constant_noise_fused_with_demodulation_equals_two_passes(up):
    layer = _synthesis_layer(up)
    x, w = torch.randn(3, 5, 8 // up, 8 // up), torch.randn(3, 8)
    expected = _demodulate_then_add_by_hand(layer, x, w, layer.noise_const)
    torch.testing.assert_close(layer(x, w, noise_mode="const"), expected, atol=1e-6, rtol=1e-6)
    # the noise does matter here: without it the output differs
    assert (layer(x, w, noise_mode="none") - expected).abs().max() > 0.1


def test_seeded_random_noise_fused_with_demodulation_equals_two_passes():
    layer = _synthesis_layer()
    x, w = torch.randn(3, 5, 8, 8), torch.randn(3, 8)
    noise = torch.randn([3, 1, 8, 8], generator=torch.Generator().manual_seed(7))
    expected = _demodulate_then_add_by_hand(layer, x, w, noise)
    got = layer(x, w, noise_mode="random", generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-6)
    reference = set_unfused_reference(layer)(x, w, noise_mode="random", generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(reference, expected, atol=1e-6, rtol=1e-6)


def test_whole_generators_agree_in_both_orders_with_their_gradients():
    G, _ = _tiny_networks()
    for layer in G.modules():
        if isinstance(layer, SynthesisLayer):
            layer.noise_strength.data.fill_(0.5)
    z, c = torch.randn(3, 8), torch.randn(3, 6)
    outputs = {}
    for unfused in (False, True):
        set_unfused_reference(G, unfused)
        G.zero_grad()
        img = G(z, c, generator=torch.Generator().manual_seed(11))
        img.square().sum().backward()
        outputs[unfused] = (img.detach(), [p.grad.clone() for p in G.parameters()])
    torch.testing.assert_close(outputs[False][0], outputs[True][0], atol=1e-5, rtol=1e-5)
    for fast, reference in zip(outputs[False][1], outputs[True][1]):
        # fp32 sums in another order (channels_last convolutions): gradients of size ~3 differ by ~5e-4
        torch.testing.assert_close(fast, reference, atol=1e-4, rtol=1e-3)


def test_no_parameter_or_buffer_was_added_and_the_switch_is_no_state():
    """Old checkpoints load: no parameter or buffer was added, and the reference switch is not state."""
    assert set(_synthesis_layer().state_dict()) == {"conv.affine.weight", "conv.affine.bias", "conv.weight",
                                                     "noise_strength", "bias", "noise_const"}
    assert set(DiscriminatorBlock(4, 8).state_dict()) == {"conv0.weight", "conv0.bias", "conv1.weight", "conv1.bias",
                                                         "skip.weight"}
    G, D = _tiny_networks()
    before = {**G.state_dict(), **{f"D.{k}": v for k, v in D.state_dict().items()}}
    set_unfused_reference(G)
    set_unfused_reference(D)
    after = {**G.state_dict(), **{f"D.{k}": v for k, v in D.state_dict().items()}}
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    # the switched networks' state dicts load strictly (the same keys) into networks built fresh
    G2, D2 = _tiny_networks()
    G2.load_state_dict(G.state_dict())
    D2.load_state_dict(D.state_dict())


# ------------------------------------------------------------------ loss.pl_batch_shrink


class CountingG:
    """G_fn that records how many samples each call generates."""

    def __init__(self, G):
        self.G, self.batches = G, []

    def __call__(self, z, c):
        self.batches.append(len(z))
        return self.G(z, c)


def greg_batches_worker(rank, world_size, shrink):
    """One train_step of the tiny setup (batch_gpu 4, every phase due) with the objective counting what G
    generates inside Greg: [(samples G made, rows of the images the penalty saw)] per micro-batch."""
    from dist_util import setup_training, tiny_cfg
    from textgan.train.step import train_step

    seen = []

    class CountingObjective(GANObjective):
        def G_reg(self, G_fn, z, c, *args, **kwargs):
            def counting_G_fn(z, c):
                img, ws = G_fn(z, c)
                seen.append((len(z), img.shape[0]))
                return img, ws
            return super().G_reg(counting_G_fn, z, c, *args, **kwargs)

    cfg = tiny_cfg("schedule.batch_size=8", "schedule.batch_gpu=4", "loss.pl_weight=2",
                   f"loss.pl_batch_shrink={shrink}")
    setup, batches, state = setup_training(cfg, objective_cls=CountingObjective)
    stats = train_step(setup, batches, state)
    return {"seen": seen, "accum": setup.engines.accum, "pl": float(stats["Loss/G/pl"])}


@pytest.mark.multiproc
def test_the_training_step_runs_greg_on_the_shrunk_micro_batches(tmp_path):
    from dist_util import run_ranks

    shrunk = run_ranks(greg_batches_worker, tmp_path, world_size=1, args=(2,))[0]
    whole = run_ranks(greg_batches_worker, tmp_path, world_size=1, args=(1,))[0]
    assert shrunk["accum"] == whole["accum"] == 2
    assert shrunk["seen"] == [(2, 2), (2, 2)]  # batch_gpu 4 // 2 in each of the 2 micro-batches
    assert whole["seen"] == [(4, 4), (4, 4)]
    assert math.isfinite(shrunk["pl"]) and math.isfinite(whole["pl"])


@pytest.mark.parametrize("batch, shrink, expected", [(8, 2, 4), (5, 2, 2), (8, 1, 8), (3, 4, 1), (1, 2, 1)])
def test_the_path_length_phase_runs_g_on_the_shrunk_batch(batch, shrink, expected):
    G, D, cfg, z, c, reals = setup(n=batch, pl_weight=2.0, pl_batch_shrink=shrink)
    objective = GANObjective(cfg)
    counting = CountingG(G)
    greg = [p for p in objective.phases(4, 16) if p.name == "Greg"][0]
    out = objective.phase_loss(greg, PhaseInputs(G_fn=counting, D_fn=D, z=z, c=c, reals=reals, pl_mean=0.0))
    assert counting.batches == [expected]
    assert objective.pl_batch_size(batch) == expected
    assert torch.isfinite(out["total"])


def test_shrink_1_is_the_old_full_batch_penalty_and_shrink_2_the_first_half():
    G, _, cfg, z, c, _ = setup(n=6, pl_weight=2.0, pl_decay=0.01)
    pl_mean = torch.tensor([0.3])

    def greg(shrink):
        objective = GANObjective(dataclasses.replace(cfg, pl_batch_shrink=shrink))
        return objective.G_reg(G, z, c, pl_mean, interval=4, generator=torch.Generator().manual_seed(3))

    def by_hand(n):
        img, ws = G(z[:n], c[:n])
        return path_length_penalty(img, ws, pl_mean, 0.01, torch.Generator().manual_seed(3))

    for shrink, n in ((1, 6), (2, 3)):
        out, new_mean = greg(shrink)
        penalty, expected_mean, lengths = by_hand(n)
        assert lengths.shape == (n,)
        torch.testing.assert_close(out["Loss/G/pl"], penalty.mean().detach())
        torch.testing.assert_close(out["total"], penalty.mean() * 2.0 * 4)
        torch.testing.assert_close(new_mean, expected_mean)
        torch.testing.assert_close(out["Stats/G/pl_length"], lengths.mean())
    assert not math.isclose(float(greg(1)[0]["Loss/G/pl"]), float(greg(2)[0]["Loss/G/pl"]))


def test_pl_batch_shrink_defaults_to_stylegan2s_2_also_for_configs_without_the_key(tmp_path):
    assert LossConfig().pl_batch_shrink == 2
    old_recipe = tmp_path / "old.yaml"
    old_recipe.write_text("loss:\n  pl_weight: 2.0\n  pl_decay: 0.01\n")
    assert load_config(str(old_recipe), REQUIRED).loss.pl_batch_shrink == 2
    assert load_config(None, REQUIRED + ["loss.pl_batch_shrink=1"]).loss.pl_batch_shrink == 1


@pytest.mark.parametrize("value", ["0", "-2"])
def test_pl_batch_shrink_below_1_is_refused_naming_the_key_and_the_range(value):
    with pytest.raises(UsageError) as info:
        load_config(None, REQUIRED + [f"loss.pl_batch_shrink={value}"])
    message = str(info.value)
    assert "'loss.pl_batch_shrink'" in message and ">= 1" in message and f"got {value}" in message
    assert "batch_gpu // pl_batch_shrink" in message


def test_pl_batch_shrink_must_be_a_whole_number():
    with pytest.raises(UsageError, match="pl_batch_shrink"):
        load_config(None, REQUIRED + ["loss.pl_batch_shrink=1.5"])


def test_the_objective_refuses_a_shrink_below_1():
    with pytest.raises(ValueError, match="pl_batch_shrink.*>= 1"):
        GANObjective(dataclasses.replace(LossConfig(), pl_batch_shrink=0))


# ------------------------------------------------------------------ model.channels_last


def _networks_in_layout(channels_last: bool):
    torch.manual_seed(0)  # the same weights in both layouts: the layout draws no random numbers
    return build_networks("stylegan2", z_dim=8, c_dim=6, img_resolution=32, channel_base=256, channel_max=16,
                          generator_kwargs=dict(w_dim=8, mapping_layers=2, channels_last=channels_last),
                          discriminator_kwargs=dict(mbstd_group_size=2, channels_last=channels_last))


def test_channels_last_computes_the_same_images_logits_and_gradients_as_the_default_layout():
    """G and D in the channels_last layout: the same weights, images, logits, parameter gradients and R1
    (double-backward) gradients as NCHW within fp32 rounding; G's images leave in the default layout."""
    results = {}
    for channels_last in (True, False):
        G, D = _networks_in_layout(channels_last)
        assert G.synthesis.blocks[0].memory_format == D.memory_format == (
            torch.channels_last if channels_last else torch.contiguous_format)
        z, c = torch.randn(4, 8, generator=torch.Generator().manual_seed(1)), torch.randn(4, 6)
        img = G(z, c, noise_mode="const")
        assert img.is_contiguous()  # what every consumer of G's images expects
        logits = D(img, c)
        (logits.sum() + img.square().mean()).backward()
        reals = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(2)).requires_grad_()
        (r1_grad,) = torch.autograd.grad(D(reals, c).sum(), reals, create_graph=True)
        r1_grad.square().sum().backward()  # R1's second derivative into D's parameters
        results[channels_last] = (img.detach(), logits.detach(), r1_grad.detach(),
                                  [p.grad.clone() for p in (*G.parameters(), *D.parameters())])
    fast, reference = results[True], results[False]
    for a, b in zip(fast[:3], reference[:3]):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    assert len(fast[3]) == len(reference[3])
    for a, b in zip(fast[3], reference[3]):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-3)


def test_channels_last_is_no_state_and_the_config_key_reaches_both_networks():
    G, D = _networks_in_layout(True)
    G_ref, D_ref = _networks_in_layout(False)
    assert G.state_dict().keys() == G_ref.state_dict().keys() and D.state_dict().keys() == D_ref.state_dict().keys()
    assert all(torch.equal(v, G_ref.state_dict()[k]) for k, v in G.state_dict().items())
    assert all(p.is_contiguous() for p in (*G.parameters(), *D.parameters()))  # checkpoints keep their layout
    from textgan.nets import build_networks_from_config

    for value, expected in (("true", torch.channels_last), ("false", torch.contiguous_format)):
        cfg = load_config(None, REQUIRED + ["model.size=0.0625", f"model.channels_last={value}"])
        G_cfg, D_cfg = build_networks_from_config(cfg, c_dim=6)
        assert G_cfg.synthesis.blocks[-1].memory_format == D_cfg.memory_format == expected
