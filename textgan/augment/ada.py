"""ADA: adaptive discriminator augmentation (Karras et al. 2020, "Training Generative Adversarial
Networks with Limited Data"), in plain differentiable PyTorch.

Every op fires per sample with probability p (independently of the others). p starts at 0 and is
steered by `adjust` toward a target value of the overfitting heuristic r_t = E[sign(D(real))]: D that
is too sure about the reals gets more augmentation. Because the ops are applied to everything D sees
and each is invertible in distribution for p < ~0.8, they do not leak into G's images.

Differentiability: G is trained through the pipe, and R1 takes a double backward through it. Every op
here is built from gather, where, matmul and elementwise arithmetic, all twice differentiable (unlike
F.grid_sample, whose double backward PyTorch does not implement). Samples that an op skips pass
through torch.where untouched, so p = 0 is the identity bit for bit.

Images are [N, C, H, W] in [-1, 1] (textgan.data.decode.to_float_image); colour ops need C = 3.
"""

import math
from typing import Optional, Sequence

import torch
from torch import nn

GEOMETRIC_OPS = ("xflip", "rotate90", "translate", "scale")
COLOR_OPS = ("brightness", "contrast", "lumaflip", "hue", "saturation")
ADA_OPS = GEOMETRIC_OPS + COLOR_OPS  # StyleGAN2-ADA's "bgc" set, without the fractional/arbitrary-angle warps


# ------------------------------------------------------------------ helpers shared with DiffAugment


def uniform(shape, generator: Optional[torch.Generator], device) -> torch.Tensor:
    """U[0, 1) drawn on the generator's device (a CPU generator can drive GPU images), moved to `device`."""
    where = generator.device if generator is not None else device
    return torch.rand(shape, generator=generator, device=where).to(device)


def normal(shape, generator: Optional[torch.Generator], device) -> torch.Tensor:
    where = generator.device if generator is not None else device
    return torch.randn(shape, generator=generator, device=where).to(device)


def integers(low: int, high: int, shape, generator: Optional[torch.Generator], device) -> torch.Tensor:
    where = generator.device if generator is not None else device
    return torch.randint(low, high, shape, generator=generator, device=where).to(device)


def gather_pixels(x: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """out[n, :, i, j] = x[n, :, rows[n, i], cols[n, j]]: a per-sample separable resampling that is
    exact (a copy) and twice differentiable."""
    n, c, h, w = x.shape
    x = x.gather(2, rows[:, None, :, None].expand(n, c, rows.shape[1], w))
    return x.gather(3, cols[:, None, None, :].expand(n, c, rows.shape[1], cols.shape[1]))


def reflect(index: torch.Tensor, size: int) -> torch.Tensor:
    """Mirror out-of-range integer indices back into [0, size) without repeating the edge pixel
    (F.pad's 'reflect'), so translated and zoomed-out images have no constant borders to spot."""
    if size == 1:
        return torch.zeros_like(index)
    period = 2 * (size - 1)
    index = index.remainder(period)
    return torch.where(index >= size, period - index, index)


def _per_sample(mask: torch.Tensor, changed: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return torch.where(mask[:, None, None, None], changed, x)


# ------------------------------------------------------------------ the pipe


class AugmentPipe(nn.Module):
    """ADA's augmentation pipe. `p` is a buffer of shape [1] (checkpointed with the module; DeepSpeed
    rejects 0-dim tensors). Defaults are StyleGAN2-ADA's: integer translation up to 1/8 of the size,
    scale 2^N(0, 0.2), brightness N(0, 0.2), contrast 2^N(0, 0.5), hue rotation U(-pi, pi),
    saturation 2^N(0, 1), luma flip with probability 1/2."""

    def __init__(
        self,
        p: float = 0.0,
        ada_target: float = 0.6,
        ada_kimg: float = 500.0,
        ada_interval: int = 4,
        ops: Sequence[str] = ADA_OPS,
        translate_max: float = 0.125,
        scale_std: float = 0.2,
        brightness_std: float = 0.2,
        contrast_std: float = 0.5,
        hue_max: float = 1.0,
        saturation_std: float = 1.0,
        generator: Optional[torch.Generator] = None,
    ):
        super().__init__()
        unknown = [op for op in ops if op not in ADA_OPS]
        if unknown:
            raise ValueError(f"AugmentPipe: unknown ops {unknown}; choose from {ADA_OPS}.")
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"AugmentPipe: p must be in [0, 1], got {p}.")
        if ada_kimg <= 0 or ada_interval < 1:
            raise ValueError(
                f"config keys 'augment.ada_kimg' (> 0) and 'augment.ada_interval' (>= 1) "
                f"got {ada_kimg}, {ada_interval}."
            )
        self.ops = tuple(ops)
        self.ada_target, self.ada_kimg, self.ada_interval = float(ada_target), float(ada_kimg), int(ada_interval)
        self.translate_max, self.scale_std = translate_max, scale_std
        self.brightness_std, self.contrast_std = brightness_std, contrast_std
        self.hue_max, self.saturation_std = hue_max, saturation_std
        self.generator = generator
        self.register_buffer("p", torch.tensor([float(p)]))

    def adjust(self, real_sign_mean, batch_images: int) -> float:
        """StyleGAN2-ADA's update, called every ada_interval D steps with r_t = the mean sign of D's real
        logits over those steps (all ranks) and batch_images = images per D step (the global batch):
            p <- clamp(p + sign(r_t - ada_target) * batch_images * ada_interval / (ada_kimg * 1000), 0, 1)
        so p can go from 0 to 1 in ada_kimg thousand images. Returns the new p."""
        r_t = float(real_sign_mean)
        step = math.copysign(1.0, r_t - self.ada_target) if r_t != self.ada_target else 0.0
        step *= batch_images * self.ada_interval / (self.ada_kimg * 1000.0)
        self.p.copy_((self.p + step).clamp(0.0, 1.0))
        return float(self.p)

    def forward(self, x: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        p = float(self.p)
        if p <= 0.0:
            return x
        g = generator if generator is not None else self.generator
        n, channels, height, width = x.shape
        device = x.device

        def chosen():  # one Bernoulli(p) draw per sample and op, always drawn: RNG use does not depend on data
            return uniform([n], g, device) < p

        # Random draws happen in a fixed order whatever the ops do, so a seeded generator gives the same
        # augmentation on any machine.
        if "xflip" in self.ops:
            x = _per_sample(chosen(), x.flip(3), x)
        if "rotate90" in self.ops:
            mask = chosen()
            turns = torch.where(mask, integers(1, 4, [n], g, device), 0)
            if height != width:
                raise ValueError(f"AugmentPipe: rotate90 needs square images, got {height}x{width}.")
            if mask.any():
                rotations = torch.stack([x.rot90(k, dims=(2, 3)) for k in range(4)])
                x = rotations[turns, torch.arange(n, device=device)]
        if "translate" in self.ops:
            mask = chosen()
            shift = (uniform([n, 2], g, device) * 2 - 1) * self.translate_max
            shift = torch.where(mask[:, None], shift, 0.0)
            ty, tx = (shift[:, 0] * height).round().long(), (shift[:, 1] * width).round().long()
            rows = reflect(torch.arange(height, device=device)[None] - ty[:, None], height)
            cols = reflect(torch.arange(width, device=device)[None] - tx[:, None], width)
            x = gather_pixels(x, rows, cols)  # a zero shift gathers the same pixels: exact
        if "scale" in self.ops:
            mask = chosen()
            scale = torch.exp2(normal([n], g, device) * self.scale_std)
            if mask.any():
                x = _per_sample(mask, _zoom(x, scale), x)
        color = [op for op in COLOR_OPS if op in self.ops]
        if color:
            if channels != 3:
                raise ValueError(f"AugmentPipe: colour ops {color} need RGB images, got {channels} channels.")
            matrix, any_color = self._color_matrix(color, n, p, g, device)
            if any_color.any():
                changed = torch.einsum("nij,njhw->nihw", matrix[:, :3, :3].to(x.dtype), x)
                changed = changed + matrix[:, :3, 3, None, None].to(x.dtype)
                x = _per_sample(any_color, changed, x)
        return x

    def _color_matrix(self, ops, n, p, g, device):
        """One homogeneous 4x4 colour transform per sample, composed like StyleGAN2-ADA's (each op
        left-multiplies), in the RGB space of [-1, 1] images, so contrast and saturation pivot on grey."""
        eye = torch.eye(4, device=device).expand(n, 4, 4)
        luma = torch.tensor([1.0, 1.0, 1.0, 0.0], device=device) / math.sqrt(3)  # the grey axis
        luma_outer = torch.outer(luma, luma)
        matrix, any_color = eye.clone(), torch.zeros([n], dtype=torch.bool, device=device)
        for op in ops:
            mask = uniform([n], g, device) < p
            any_color |= mask
            if op == "brightness":
                b = torch.where(mask, normal([n], g, device) * self.brightness_std, 0.0)
                step = eye.clone()
                step[:, :3, 3] = b[:, None]
            elif op == "contrast":
                c = torch.where(mask, torch.exp2(normal([n], g, device) * self.contrast_std), 1.0)
                step = torch.diag_embed(torch.stack([c, c, c, torch.ones_like(c)], dim=1))
            elif op == "lumaflip":
                flip = torch.where(mask, integers(0, 2, [n], g, device), 0).float()
                step = eye - 2 * luma_outer * flip[:, None, None]  # mirror across the plane normal to grey
            elif op == "hue":
                theta = torch.where(mask, (uniform([n], g, device) * 2 - 1) * math.pi * self.hue_max, 0.0)
                step = _rotation_about(luma[:3], theta)
            else:  # saturation: scale the colour away from the grey axis
                s = torch.where(mask, torch.exp2(normal([n], g, device) * self.saturation_std), 1.0)
                step = luma_outer + (eye - luma_outer) * s[:, None, None]
            matrix = step @ matrix
        return matrix, any_color


def _rotation_about(axis: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Homogeneous 4x4 rotations by theta [N] about a unit 3-vector (Rodrigues' formula)."""
    x, y, z = axis
    zero = torch.zeros((), device=axis.device)
    cross = torch.stack([torch.stack([zero, -z, y]), torch.stack([z, zero, -x]), torch.stack([-y, x, zero])])
    cos, sin = theta.cos()[:, None, None], theta.sin()[:, None, None]
    rot = cos * torch.eye(3, device=axis.device) + sin * cross + (1 - cos) * torch.outer(axis, axis)
    out = torch.eye(4, device=axis.device).repeat(theta.shape[0], 1, 1)
    out[:, :3, :3] = rot
    return out


def _resample_rows(x: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """Linear interpolation along the rows of x at float coords [N, H], mirrored at the borders."""
    low = coords.floor()
    frac = (coords - low).to(x.dtype)[:, None, :, None]
    low = low.long()
    cols = torch.arange(x.shape[3], device=x.device)[None].expand(x.shape[0], -1)
    size = x.shape[2]
    below, above = gather_pixels(x, reflect(low, size), cols), gather_pixels(x, reflect(low + 1, size), cols)
    return below * (1 - frac) + above * frac


def _zoom(x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Isotropic scaling by scale [N] about the image centre: separable bilinear resampling (rows, then
    columns via a transpose); no anti-aliasing, which is fine for ADA's mild 2^N(0, 0.2) zooms."""

    def coords(size):
        centre = (size - 1) / 2
        return (torch.arange(size, device=x.device, dtype=torch.float32)[None] - centre) / scale[:, None] + centre

    x = _resample_rows(x, coords(x.shape[2]))
    return _resample_rows(x.transpose(2, 3), coords(x.shape[3])).transpose(2, 3)
