"""StyleGAN2 residual discriminator, conditioned on the text embedding c by projection.

trunk:     image -> fromRGB -> residual blocks down to 4x4 -> minibatch stddev -> conv -> fc
           = the pooled image features [N, feature_dim] (`features()`), which know nothing of c.
head:      logits = out(features) + <proj(features), cmap(c)> / sqrt(cmap_dim)

The head is the projection discriminator (Miyato & Koyama 2018): an unconditional realness term plus
the agreement between the image features and an embedding of the text. StyleGAN2-ADA keeps only the
projection term; the unconditional term is kept here so that D still judges realness when captions
are vague. The contrastive losses attach their own heads to the same features, either by calling
`features(img)` or by `forward(img, c, return_features=True)`, which reuses D's one forward.

All ops are plain conv2d / linear / leaky_relu / sqrt, so R1 by double backward works.
"""

import math

from torch import nn

from .layers import (
    ConditionMapping,
    EqualConv2d,
    EqualLinear,
    MinibatchStd,
    channels_per_resolution,
    check_c_dim,
    check_condition,
    check_images,
    memory_format,
)


class DiscriminatorBlock(nn.Module):
    """conv 3x3 -> conv 3x3 with 2x downsampling, plus a 1x1 downsampling skip; the sum is scaled by
    sqrt(0.5) so that the two paths together keep the activations' variance."""

    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.conv0 = EqualConv2d(in_channels, in_channels, 3, activation="lrelu")
        self.conv1 = EqualConv2d(in_channels, out_channels, 3, activation="lrelu", down=2)
        self.skip = EqualConv2d(in_channels, out_channels, 1, bias=False, down=2)

    def forward(self, x):
        return (self.skip(x) + self.conv1(self.conv0(x))) * math.sqrt(0.5)


class ProjectionHead(nn.Module):
    """logits = out(features) + <proj(features), cmap(c)> / sqrt(cmap_dim). Shared by both archs."""

    def __init__(self, feature_dim, c_dim, cmap_dim, cmap_layers=2):
        super().__init__()
        self.c_dim = c_dim
        self.cmap_dim = cmap_dim
        self.out = EqualLinear(feature_dim, 1)
        self.proj = EqualLinear(feature_dim, cmap_dim, bias=False)
        self.c_norm = nn.Identity()  # a ConditionNorm when model.c_norm is set (textgan.nets.condition_norm)
        self.cmap = ConditionMapping(c_dim, cmap_dim, cmap_layers)

    def forward(self, features, c):
        check_condition(c, features.shape[0], self.c_dim, "discriminator")
        agreement = (self.proj(features) * self.cmap(self.c_norm(c))).sum(dim=1, keepdim=True)
        return self.out(features) + agreement / math.sqrt(self.cmap_dim)


class Discriminator(nn.Module):
    """`forward(img, c) -> logits [N, 1]`; `forward(img, c, return_features=True) -> (logits, features)`;
    `features(img) -> [N, feature_dim]`. Channels per resolution as in the Generator."""

    def __init__(
        self,
        c_dim,
        img_resolution=256,
        img_channels=3,
        size=1.0,
        channel_base=32768,
        channel_max=512,
        mbstd_group_size=4,
        mbstd_num_channels=1,
        cmap_dim=None,
        cmap_layers=2,
        channels_last=True,
    ):
        super().__init__()
        self.memory_format = memory_format(channels_last)  # textgan.nets.layers.memory_format
        self.channels = ch = channels_per_resolution(img_resolution, channel_base, channel_max, size)
        self.c_dim = check_c_dim(c_dim)
        self.img_resolution, self.img_channels = img_resolution, img_channels
        if ch[4] % mbstd_num_channels != 0:
            raise ValueError(
                f"mbstd_num_channels={mbstd_num_channels} must divide the 4x4 channel count {ch[4]}."
            )

        self.fromrgb = EqualConv2d(img_channels, ch[img_resolution], 1, activation="lrelu")
        self.blocks = nn.ModuleList(DiscriminatorBlock(ch[r], ch[r // 2]) for r in reversed(ch) if r > 4)
        self.mbstd = MinibatchStd(mbstd_group_size, mbstd_num_channels)
        self.conv = EqualConv2d(ch[4] + mbstd_num_channels, ch[4], 3, activation="lrelu")
        self.fc = EqualLinear(ch[4] * 4 * 4, ch[4], activation="lrelu")
        self.feature_dim = ch[4]
        self.head = ProjectionHead(self.feature_dim, c_dim, cmap_dim or self.feature_dim, cmap_layers)

    def features(self, img):
        """Pooled image features [N, feature_dim] (unconditional). Note: the minibatch-stddev layer
        makes each sample's features depend on the other samples of its group."""
        check_images(img, self.img_channels, self.img_resolution, "discriminator")
        x = self.fromrgb(img.contiguous(memory_format=self.memory_format))
        for block in self.blocks:
            x = block(x)
        x = self.conv(self.mbstd(x))
        return self.fc(x.flatten(1))

    def forward(self, img, c, return_features=False):
        features = self.features(img)
        logits = self.head(features, c)
        return (logits, features) if return_features else logits
