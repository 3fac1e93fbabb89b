"""model.cgan_conditional_bn: c sets a gain and a bias of every batch norm of the cgan generator."""

import torch
from torch import nn

from textgan.config import load_config, to_yaml
from textgan.export import FORMAT, build_nets, load_generator
from textgan.nets.layers import normalize_2nd_moment

C_DIM = 24
TINY_CGAN = ["data.shards=x", "data.resolution=16", "model.channel_base=512", "model.channel_max=32",
             "model.z_dim=16", "model.w_dim=20", "model.arch=cgan", "loss.pl_weight=0", "loss.style_mixing_prob=0"]


def config(conditional_bn, *more):
    return load_config(None, TINY_CGAN + [f"model.cgan_conditional_bn={str(conditional_bn).lower()}", *more])


def build_both(conditional_bn, *more):
    torch.manual_seed(0)
    return build_nets(config(conditional_bn, *more), C_DIM)


def build(conditional_bn, *more):
    return build_both(conditional_bn, *more)[0]


def inputs(seed=1, n=4):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 16, generator=g), torch.randn(n, C_DIM, generator=g)


def randomize_affines(G, seed=3):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in G.c_affine:
            layer.weight.copy_(torch.randn(layer.weight.shape, generator=g) * 0.3)
            layer.bias.copy_(torch.randn(layer.bias.shape, generator=g) * 0.3)


def test_off_is_the_old_generator_and_on_adds_one_zero_initialised_affine_per_batch_norm():
    old, new = build(False), build(True)
    s0, s1 = old.state_dict(), new.state_dict()
    assert old.c_affine is None and not [k for k in s0 if k.startswith("c_affine.")]  # old checkpoints load
    norms = [m.num_features for m in new.net if isinstance(m, nn.BatchNorm2d)]
    assert norms == [32, 32]  # 16 px: batch norms after the 4x4 and 8x8 convolutions (channel_max 32)
    assert {k: tuple(v.shape) for k, v in s1.items() if k.startswith("c_affine.")} == {
        f"c_affine.{i}.{p}": ((2 * ch, C_DIM) if p == "weight" else (2 * ch,))
        for i, ch in enumerate(norms) for p in ("weight", "bias")}
    assert all(float(v.abs().max()) == 0 for k, v in s1.items() if k.startswith("c_affine."))
    # built after the DCGAN init without drawing random numbers: every shared weight is the same, and so is D,
    # which is built after G from the same random stream
    assert all(torch.equal(s0[k], s1[k]) for k in s0)
    D0, D1 = (build_both(v)[1].state_dict() for v in (False, True))
    assert all(torch.equal(D0[k], D1[k]) for k in D0)
    z, c = inputs()
    torch.testing.assert_close(new(z, c), old(z, c), rtol=0, atol=0)  # at step 0 the same images


def test_each_batch_norm_output_is_scaled_by_one_plus_gain_and_shifted_by_bias_of_the_normalised_c():
    G = build(True)
    randomize_affines(G)
    z, c = inputs()
    cn = normalize_2nd_moment(c)
    x, affines = torch.cat([z, cn], dim=1)[:, :, None, None], iter(G.c_affine)
    for layer in G.net:
        x = layer(x)
        if isinstance(layer, nn.BatchNorm2d):
            a = next(affines)
            ch = layer.num_features
            gain = cn @ a.weight[:ch].T + a.bias[:ch]
            bias = cn @ a.weight[ch:].T + a.bias[ch:]
            x = x * (1 + gain[:, :, None, None]) + bias[:, :, None, None]
    torch.testing.assert_close(G(z, c), x, rtol=1e-5, atol=1e-6)
    # and c now changes the picture through the affines too: with the first convolution blind to c
    # (its c columns zeroed) the images still depend on the caption
    with torch.no_grad():
        G.net[0].weight[16:] = 0
    other = inputs(seed=2)[1]
    assert (G(z, c) - G(z, other)).abs().max() > 1e-2


def test_the_affines_get_gradients_from_zero_and_train():
    G = build(True)
    z, c = inputs()
    G(z, c).square().mean().backward()
    grads = [layer.weight.grad for layer in G.c_affine]
    assert all(g is not None and float(g.abs().max()) > 0 for g in grads)


def test_it_composes_with_the_mlp_on_c_which_feeds_the_affines():
    G = build(True, "model.c_embed_layers=2")
    assert [tuple(a.weight.shape) for a in G.c_affine] == [(64, 20), (64, 20)]  # read the w_dim-wide embedding


def test_an_export_with_conditional_bn_loads_and_draws_the_same_pixels(tmp_path):
    cfg, G = config(True), build(True)
    randomize_affines(G)
    G.eval()
    path = tmp_path / "G.pt"
    torch.save({"format": FORMAT, "version": 1, "config": to_yaml(cfg), "arch": "cgan", "c_dim": C_DIM,
                "G_ema": G.state_dict()}, path)
    loaded, loaded_cfg = load_generator(str(path))
    assert loaded_cfg.model.cgan_conditional_bn is True
    z, c = inputs(n=3)
    with torch.no_grad():
        torch.testing.assert_close(loaded(z, c), G(z, c), rtol=0, atol=0)


def test_stylegan2_ignores_it_as_the_cgan_ignores_the_mapping_keys():
    # the demo recipe sets it; --set model.arch=stylegan2 must still build StyleGAN2 (w conditions every layer)
    cfgs = [load_config(None, ["data.shards=x", "data.resolution=16", "model.channel_base=512", "model.channel_max=32",
                               "model.z_dim=16", "model.w_dim=20", f"model.cgan_conditional_bn={v}"])
            for v in ("true", "false")]
    states = []
    for cfg in cfgs:
        torch.manual_seed(0)
        states.append(build_nets(cfg, C_DIM)[0].state_dict())
    assert states[0].keys() == states[1].keys() and all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    assert not any(k.startswith("c_affine.") for k in states[0])
