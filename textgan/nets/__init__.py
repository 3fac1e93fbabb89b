"""Networks: pure PyTorch, nothing about ranks, optimizers or DeepSpeed.

`build_networks("stylegan2" | "cgan", ...)` returns (G, D). Both architectures share the interface
the training loop relies on:

    G(z, c, psi=1.0, truncation_cutoff=None, noise_mode="random", ...) -> images [N, C, R, R]
    D(img, c) -> logits [N, 1];  D(img, c, return_features=True) -> (logits, features)
    D.features(img) -> [N, D.feature_dim]
    G.z_dim, G.c_dim, G.img_resolution, D.c_dim, D.img_resolution, D.feature_dim

Only the StyleGAN2 generator has styles (`G.mapping`, `G.synthesis`, `G.num_ws`), which style mixing,
truncation and path-length regularization need.
"""

from .cgan import CGANDiscriminator, CGANGenerator
from .condition_norm import ConditionNorm
from .contrastive_heads import ContrastiveHeads
from .discriminator import Discriminator
from .generator import Generator, mix_styles
from .layers import ALLOWED_RESOLUTIONS

ARCHS = ("stylegan2", "cgan")

__all__ = [
    "ALLOWED_RESOLUTIONS",
    "ARCHS",
    "CGANDiscriminator",
    "CGANGenerator",
    "ContrastiveHeads",
    "Discriminator",
    "Generator",
    "build_networks",
    "mix_styles",
]


def build_networks(
    arch,
    z_dim,
    c_dim,
    img_resolution,
    img_channels=3,
    size=1.0,
    channel_base=None,
    channel_max=None,
    generator_kwargs=None,
    discriminator_kwargs=None,
):
    """(G, D) for `arch`. channel_base / channel_max (None: the architecture's default) apply to both
    networks, as in StyleGAN2; the *_kwargs dicts pass anything else (w_dim, mapping_layers,
    mbstd_group_size, cmap_dim, ...) to one of them."""
    if arch not in ARCHS:
        raise ValueError(f"model.arch={arch!r} is not one of {ARCHS}.")
    common = dict(img_resolution=img_resolution, img_channels=img_channels, size=size)
    if channel_base is not None:
        common["channel_base"] = channel_base
    if channel_max is not None:
        common["channel_max"] = channel_max
    g_cls, d_cls = (Generator, Discriminator) if arch == "stylegan2" else (CGANGenerator, CGANDiscriminator)
    G = g_cls(z_dim=z_dim, c_dim=c_dim, **common, **(generator_kwargs or {}))
    D = d_cls(c_dim=c_dim, **common, **(discriminator_kwargs or {}))
    return G, D


def build_networks_from_config(cfg, c_dim: int):
    """(G, D) for a training config (its `model` section and data.resolution) and a text-embedding
    size: the one place that maps config keys to network arguments, shared by training and export."""
    m = cfg.model
    G_kwargs = {"w_dim": m.w_dim, "mapping_layers": m.mapping_layers, "mapping_lr_mul": m.mapping_lr_mul,
                "c_embed_layers": m.c_embed_layers} \
        if m.arch == "stylegan2" else {"c_embed_layers": m.c_embed_layers, "c_embed_dim": m.w_dim,
                                                  "conditional_bn": m.cgan_conditional_bn}
    D_kwargs = {"mbstd_group_size": m.mbstd_group_size} if m.arch == "stylegan2" else {}
    if m.arch == "stylegan2":
        G_kwargs["channels_last"] = D_kwargs["channels_last"] = m.channels_last
    G, D = build_networks(m.arch, z_dim=m.z_dim, c_dim=c_dim, img_resolution=cfg.data.resolution, size=m.size,
                          channel_base=m.channel_base, channel_max=m.channel_max,
                          generator_kwargs=G_kwargs, discriminator_kwargs=D_kwargs)
    if m.c_norm != "none":  # after the weights are drawn: a run without it builds exactly the same nets
        (G.mapping if m.arch == "stylegan2" else G).c_norm = ConditionNorm(c_dim, m.c_norm)
        D.head.c_norm = ConditionNorm(c_dim, m.c_norm)
    cc = cfg.contrastive
    if cc.S_D > 0 and (cc.C_it > 0 or cc.C_ii > 0):
        # The D structure's heads; only when a D term is on, so that the base model's D (and the
        # random numbers drawn after building it) stay exactly the same.
        D.contrastive = ContrastiveHeads(D.feature_dim, c_dim, cc.head_dim, cc.temperature, cc.learnable_temperature)
    return G, D
