"""model.c_embed_layers: an MLP that embeds c in G before c meets z (both architectures); 0 is the old network."""

import pytest
import torch

from textgan.config import load_config, to_yaml
from textgan.errors import UsageError
from textgan.export import FORMAT, build_nets, load_generator
from textgan.nets.layers import ConditionMapping, normalize_2nd_moment

C_DIM = 24
TINY_MODEL = ["data.shards=x", "data.resolution=16", "model.channel_base=512", "model.channel_max=32",
              "model.z_dim=16", "model.w_dim=20", "model.mapping_layers=1"]
CGAN = ["model.arch=cgan", "loss.pl_weight=0", "loss.style_mixing_prob=0"]


def config(arch, layers):
    return load_config(None, TINY_MODEL + (CGAN if arch == "cgan" else []) + [f"model.c_embed_layers={layers}"])


def build(arch, layers):
    torch.manual_seed(0)
    G, _ = build_nets(config(arch, layers), C_DIM)
    return G.eval()


EMBED_PREFIX = {"stylegan2": "mapping.embed.", "cgan": "c_embed."}


@pytest.mark.parametrize("arch", ["stylegan2", "cgan"])
def test_zero_builds_the_old_generator_and_n_adds_an_n_layer_mlp_of_width_w_dim(arch):
    old, new = build(arch, 0), build(arch, 3)
    s0, s3 = old.state_dict(), new.state_dict()
    prefix = EMBED_PREFIX[arch]
    assert not [k for k in s0 if k.startswith(prefix + "layers.")]  # the old state dict: old checkpoints load
    mlp = new.mapping.embed if arch == "stylegan2" else new.c_embed
    assert isinstance(mlp, ConditionMapping) and len(mlp.layers) == 3
    assert [tuple(s3[f"{prefix}layers.{i}.weight"].shape) for i in range(3)] == [(20, C_DIM), (20, 20), (20, 20)]
    if arch == "cgan":
        # the first convolution reads z (16) + the embedding (w_dim 20) instead of z + c (24)
        assert old.c_embed is None and set(s3) - set(s0) == {f"c_embed.layers.{i}.{p}" for i in range(3)
                                                                for p in ("weight", "bias")}
        assert s0["net.0.weight"].shape[0] == 16 + C_DIM and s3["net.0.weight"].shape[0] == 16 + 20
    else:
        assert tuple(s0["mapping.embed.weight"].shape) == (20, C_DIM)  # StyleGAN2-ADA's one linear embedding


def test_the_cgan_generator_reads_c_through_the_mlp():
    G = build("cgan", 2)
    g = torch.Generator().manual_seed(1)
    z, c = torch.randn(4, 16, generator=g), torch.randn(4, C_DIM, generator=g)
    with torch.no_grad():
        by_hand = G.net(torch.cat([z, normalize_2nd_moment(G.c_embed(c))], dim=1)[:, :, None, None])
        torch.testing.assert_close(G(z, c), by_hand, rtol=0, atol=0)
        # the embedding is nonlinear in c: halfway between two captions is not halfway between their embeddings
        a, b = G.c_embed(c[:1]), G.c_embed(c[1:2])
        assert (G.c_embed((c[:1] + c[1:2]) / 2) - (a + b) / 2).abs().max() > 1e-3


@pytest.mark.parametrize("arch", ["stylegan2", "cgan"])
def test_the_mlp_learns_at_the_full_rate(arch):
    G = build(arch, 2)
    mlp = G.mapping.embed if arch == "stylegan2" else G.c_embed
    # EqualLinear's runtime scale 1/sqrt(fan_in) x lr_mul: lr_mul 1 here, unlike the mapping network's 0.01
    assert [layer.weight_gain for layer in mlp.layers] == pytest.approx([C_DIM ** -0.5, 20 ** -0.5])
    if arch == "stylegan2":
        assert G.mapping.layers[0].weight_gain == pytest.approx(0.01 * (16 + 20) ** -0.5)


@pytest.mark.parametrize("arch", ["stylegan2", "cgan"])
def test_an_export_with_the_mlp_loads_and_draws_the_same_pixels(tmp_path, arch):
    cfg = config(arch, 2)
    G = build(arch, 2)
    path = tmp_path / "G.pt"
    torch.save({"format": FORMAT, "version": 1, "config": to_yaml(cfg), "arch": arch, "c_dim": C_DIM,
                "G_ema": G.state_dict()}, path)
    loaded, loaded_cfg = load_generator(str(path))
    assert loaded_cfg.model.c_embed_layers == 2
    g = torch.Generator().manual_seed(2)
    z, c = torch.randn(3, 16, generator=g), torch.randn(3, C_DIM, generator=g)
    with torch.no_grad():
        torch.testing.assert_close(loaded(z, c, noise_mode="const"), G(z, c, noise_mode="const"), rtol=0, atol=0)


def test_a_negative_count_is_refused_naming_the_key():
    with pytest.raises(UsageError, match=r"'model.c_embed_layers'.*>= 0"):
        load_config(None, TINY_MODEL + ["model.c_embed_layers=-1"])
