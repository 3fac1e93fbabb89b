"""DiffAugment (Zhao et al. 2020, "Differentiable Augmentation for Data-Efficient GAN Training"):
the same random, differentiable augmentations applied to every image D sees, always on (no p).

Policies (comma-separated, config key `augment.diffaugment`), as in the paper's reference settings:
* color:       brightness + U(-0.5, 0.5); saturation x (U(0, 2)) about the per-pixel channel mean;
               contrast x (U(0.5, 1.5)) about the per-image mean.
* translation: integer shift of up to 1/8 of the size per axis, zero padding.
* cutout:      one square of half the size (centre anywhere in the image) set to zero.
Each is made of elementwise arithmetic and gather, so double backward (R1) works through it.
"""

from typing import Optional

import torch
from torch import nn

from textgan.augment.ada import gather_pixels, integers, uniform

POLICIES = ("color", "translation", "cutout")


def parse_policy(policy: str) -> tuple:
    names = tuple(name.strip() for name in policy.split(",") if name.strip())
    unknown = [name for name in names if name not in POLICIES]
    if not names or unknown:
        raise ValueError(
            f"DiffAugment policy {policy!r} is not valid: use a comma-separated subset of {', '.join(POLICIES)} "
            f"(e.g. 'color,translation,cutout')."
        )
    return names


class DiffAugment(nn.Module):
    def __init__(
        self,
        policy: str = "color,translation,cutout",
        translation_ratio: float = 0.125,
        cutout_ratio: float = 0.5,
        generator: Optional[torch.Generator] = None,
    ):
        super().__init__()
        self.policy = parse_policy(policy)
        self.translation_ratio, self.cutout_ratio = translation_ratio, cutout_ratio
        self.generator = generator

    def forward(self, x: torch.Tensor, generator: Optional[torch.Generator] = None, same_for_all: bool = False
                ) -> torch.Tensor:
        """same_for_all: one draw of the random parameters for the whole batch (one view, applied to every
        image: a scorer that averages views then judges every image on the same views, wherever it sits in
        its batch); by default each image gets its own, as in training."""
        g = generator if generator is not None else self.generator
        draws = 1 if same_for_all else x.shape[0]  # parameter sets drawn; one broadcasts over the batch
        for name in self.policy:
            x = getattr(self, f"_{name}")(x, g, draws)
        return x

    def _color(self, x, g, draws):
        device = x.device
        x = x + (uniform([draws, 1, 1, 1], g, device).to(x.dtype) - 0.5)
        mean = x.mean(dim=1, keepdim=True)
        x = (x - mean) * (uniform([draws, 1, 1, 1], g, device).to(x.dtype) * 2) + mean
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        return (x - mean) * (uniform([draws, 1, 1, 1], g, device).to(x.dtype) + 0.5) + mean

    def _translation(self, x, g, draws):
        n, _, height, width = x.shape
        device = x.device

        def shifted(size):  # source index per output pixel; out of range -> zero padding
            limit = int(size * self.translation_ratio + 0.5)
            shift = integers(-limit, limit + 1, [draws, 1], g, device).expand(n, 1)
            index = torch.arange(size, device=device)[None] - shift
            return index.clamp(0, size - 1), (index >= 0) & (index < size)

        rows, rows_inside = shifted(height)
        cols, cols_inside = shifted(width)
        inside = (rows_inside[:, :, None] & cols_inside[:, None, :])[:, None].to(x.dtype)
        return gather_pixels(x, rows, cols) * inside

    def _cutout(self, x, g, draws):
        n, _, height, width = x.shape
        device = x.device

        def outside(size):  # True where the pixel is outside the cut along this axis
            cut = int(size * self.cutout_ratio + 0.5)
            centre = integers(0, size + (1 - cut % 2), [draws, 1], g, device).expand(n, 1)
            start = centre - cut // 2
            index = torch.arange(size, device=device)[None]
            return (index < start) | (index >= start + cut)

        keep = outside(height)[:, :, None] | outside(width)[:, None, :]
        return x * keep[:, None].to(x.dtype)
