"""The discriminator's contrastive heads: the "D" feature space of the contrastive losses.

    heads = ContrastiveHeads(D.feature_dim, c_dim, dim=256)
    image_emb, text_emb, temperature = heads(features=D_features, c=c)     (either input may be None)
    heads.image(D_features), heads.text(c), heads.temperature()           (the same, one at a time)

Two small MLPs project D's pooled image features and the text condition into one space where
InfoNCE compares them (Ye et al. 2021's discriminator structure; XMC-GAN's D projections). They
live inside D (`D.contrastive`), so D's optimizer trains them on real image-caption pairs in D's
phase, and the generator is trained through them, frozen, in its own phase.

The temperature is a parameter when learnable (stored as its log so that it stays positive, shape
[1] because DeepSpeed cannot hold zero-dimensional parameters), else a buffer. Everything goes
through forward(): under ZeRO-3 a module's own parameters are gathered only for its forward, so a
temperature read from the attribute elsewhere would be an empty partition.
"""

import math

import torch
from torch import nn

from .layers import EqualLinear, normalize_2nd_moment


class ContrastiveHeads(nn.Module):
    def __init__(self, feature_dim: int, c_dim: int, dim: int = 256, temperature: float = 0.1,
                 learnable_temperature: bool = False):
        super().__init__()
        if dim < 1:
            raise ValueError(f"contrastive head dimension must be >= 1, got {dim}")
        if not temperature > 0:
            raise ValueError(f"contrastive temperature must be > 0, got {temperature}")
        self.dim = dim
        self.image_mlp = nn.Sequential(EqualLinear(feature_dim, dim, activation="lrelu"), EqualLinear(dim, dim))
        self.text_mlp = nn.Sequential(EqualLinear(c_dim, dim, activation="lrelu"), EqualLinear(dim, dim))
        log_t = torch.full([1], math.log(temperature))
        if learnable_temperature:
            self.log_temperature = nn.Parameter(log_t)
        else:
            self.register_buffer("log_temperature", log_t)

    def forward(self, features=None, c=None):
        image = self.image_mlp(features) if features is not None else None
        # A CLIP embedding has unit L2 norm (tiny entries): bring it to unit scale first, as D's
        # own condition mapping does.
        text = self.text_mlp(normalize_2nd_moment(c)) if c is not None else None
        return image, text, self.log_temperature.exp().sum()

    def image(self, features: torch.Tensor) -> torch.Tensor:
        return self(features=features)[0]

    def text(self, c: torch.Tensor) -> torch.Tensor:
        return self(c=c)[1]

    def temperature(self) -> torch.Tensor:
        return self()[2]
