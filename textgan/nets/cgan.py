"""Conditional DCGAN baseline (`model.arch: cgan`): the research notes' point of comparison.

Generator: [z, c] -> transposed convs (4x4 stride 2) with batch norm and ReLU -> tanh image; with
conditional_bn, c also sets each batch norm's gain and bias (model.cgan_conditional_bn).
Discriminator: strided convs with leaky ReLU down to 4x4 -> pooled features -> the same projection
head as the StyleGAN2 discriminator. D has no batch norm: R1 differentiates D per real batch, and
batch statistics would mix real and fake batches' gradients in ways the losses do not expect.

Both classes take the StyleGAN2 networks' call signatures, so losses and sampling code treat the two
architectures alike; what DCGAN has no notion of (truncation, noise inputs, style mixing) is accepted
and ignored. Code that needs styles (path-length regularization, ws) must check `hasattr(G, "mapping")`.
"""

import torch
from torch import nn
from torch.nn.utils import skip_init

from .discriminator import ProjectionHead
from .layers import (
    ConditionMapping,
    channels_per_resolution,
    check_c_dim,
    check_condition,
    check_images,
    normalize_2nd_moment,
)

CGAN_CHANNEL_BASE = 4096  # 512 channels at 4x4 and 8x8, 256 at 16, 128 at 32, 64 at 64: DCGAN's widths
CGAN_CHANNEL_MAX = 512


def _dcgan_init(module):
    """DCGAN's initialisation: conv weights N(0, 0.02), batch-norm scales N(1, 0.02)."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


class CGANGenerator(nn.Module):
    def __init__(
        self,
        z_dim,
        c_dim,
        img_resolution=64,
        img_channels=3,
        size=1.0,
        channel_base=CGAN_CHANNEL_BASE,
        channel_max=CGAN_CHANNEL_MAX,
        c_embed_layers=0,
        c_embed_dim=None,
        conditional_bn=False,
    ):
        super().__init__()
        self.channels = ch = channels_per_resolution(img_resolution, channel_base, channel_max, size)
        self.z_dim, self.c_dim = z_dim, check_c_dim(c_dim)
        if c_embed_layers < 0:
            raise ValueError(f"c_embed_layers must be >= 0, got {c_embed_layers}.")
        embed_dim = (c_embed_dim or c_dim) if c_embed_layers else c_dim
        self.img_resolution, self.img_channels = img_resolution, img_channels
        layers = [nn.ConvTranspose2d(z_dim + embed_dim, ch[4], 4, 1, 0, bias=False), nn.BatchNorm2d(ch[4]), nn.ReLU()]
        for r in list(ch)[1:-1]:  # 8 .. R/2
            layers += [nn.ConvTranspose2d(ch[r // 2], ch[r], 4, 2, 1, bias=False), nn.BatchNorm2d(ch[r]), nn.ReLU()]
        layers += [nn.ConvTranspose2d(ch[img_resolution // 2], img_channels, 4, 2, 1), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        self.apply(_dcgan_init)
        self.c_norm = nn.Identity()  # a ConditionNorm when model.c_norm is set (textgan.nets.condition_norm)
        # DCGAN conditions only through the first convolution, a LINEAR function of c. Which colours a two-object
        # caption names is not linearly readable from a text embedding (measured on the demo tower: a linear
        # probe reads the second object's colour 88% right, a one-hidden-layer MLP 99%: `python
        # benchmarks/demo_learning.py --probe`), so model.c_embed_layers puts an MLP on c first, as StyleGAN2's
        # mapping network does (0: exactly the old generator). On the demo it learned slower and ended no better
        # within 160 kimg (BENCHMARKS.md "demo learning"), hence off by default.
        self.c_embed = ConditionMapping(c_dim, embed_dim, c_embed_layers) if c_embed_layers else None
        # model.cgan_conditional_bn: c also sets a gain and a bias of every batch norm (conditional batch norm, as
        # SNGAN-projection's and BigGAN's generators; DF-GAN fuses the text at every block the same way), so the
        # text reaches every resolution, as StyleGAN2's w does, instead of only the first convolution. Zero-initialised
        # (skip_init: no random numbers drawn, so G, and D built after it, get the same weights as without it): at step
        # 0 it is exactly the plain generator.
        self.c_affine = None
        if conditional_bn:
            norms = [m for m in self.net if isinstance(m, nn.BatchNorm2d)]
            self.c_affine = nn.ModuleList(skip_init(nn.Linear, embed_dim, 2 * m.num_features) for m in norms)
            for layer in self.c_affine:
                nn.init.zeros_(layer.weight)
                nn.init.zeros_(layer.bias)

    def forward(
        self,
        z,
        c,
        psi=1.0,
        truncation_cutoff=None,
        noise_mode="random",
        w_avg=None,
        update_w_avg=False,
        style_mixing_prob=0.0,
        generator=None,
        return_ws=False,
    ):
        """Images [N, img_channels, R, R] in [-1, 1]. Only z and c matter (see module docstring)."""
        if return_ws:
            raise ValueError("return_ws=True: the cgan generator has no styles (ws); only model.arch=stylegan2 has.")
        if z.ndim != 2 or z.shape[1] != self.z_dim:
            raise ValueError(f"cgan generator: z must have shape [N, {self.z_dim}], got {list(z.shape)}.")
        check_condition(c, z.shape[0], self.c_dim, "cgan generator")
        # A CLIP embedding has unit L2 norm (entries ~1/sqrt(c_dim)); normalising it to unit second
        # moment gives it the same scale as z, so the text is not drowned out by the noise.
        c = self.c_norm(c)
        if self.c_embed is not None:
            c = self.c_embed(c)  # normalises c's second moment first (ConditionMapping)
        c = normalize_2nd_moment(c)
        x = torch.cat([z, c], dim=1)[:, :, None, None]
        if self.c_affine is None:
            return self.net(x)
        affines = iter(self.c_affine)
        for layer in self.net:
            x = layer(x)
            if isinstance(layer, nn.BatchNorm2d):
                gain, bias = next(affines)(c)[:, :, None, None].chunk(2, dim=1)
                x = torch.addcmul(bias, x, 1 + gain)
        return x


class CGANDiscriminator(nn.Module):
    """Same interface as textgan.nets.discriminator.Discriminator."""

    def __init__(
        self,
        c_dim,
        img_resolution=64,
        img_channels=3,
        size=1.0,
        channel_base=CGAN_CHANNEL_BASE,
        channel_max=CGAN_CHANNEL_MAX,
        cmap_dim=None,
        cmap_layers=2,
    ):
        super().__init__()
        self.channels = ch = channels_per_resolution(img_resolution, channel_base, channel_max, size)
        self.c_dim = check_c_dim(c_dim)
        self.img_resolution, self.img_channels = img_resolution, img_channels
        layers = []
        in_ch = img_channels
        for r in [r for r in reversed(ch) if r > 4]:  # R .. 8, each halving
            layers += [nn.Conv2d(in_ch, ch[r // 2], 4, 2, 1), nn.LeakyReLU(0.2)]
            in_ch = ch[r // 2]
        self.feature_dim = ch[4]
        # A 4x4 'valid' conv pools the 4x4 map into one feature vector.
        layers += [nn.Conv2d(ch[4], self.feature_dim, 4, 1, 0), nn.LeakyReLU(0.2), nn.Flatten()]
        self.trunk = nn.Sequential(*layers)
        self.trunk.apply(_dcgan_init)
        self.head = ProjectionHead(self.feature_dim, c_dim, cmap_dim or self.feature_dim, cmap_layers)

    def features(self, img):
        check_images(img, self.img_channels, self.img_resolution, "cgan discriminator")
        return self.trunk(img)

    def forward(self, img, c, return_features=False):
        features = self.features(img)
        logits = self.head(features, c)
        return (logits, features) if return_features else logits
