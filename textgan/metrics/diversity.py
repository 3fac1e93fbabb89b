"""Diversity among samples of one caption: mean pairwise MS-SSIM (Progressive GAN's measure; lower = more
diverse, 1 = identical samples, i.e. the caption's latents are ignored: mode collapse).

torchmetrics' MS-SSIM with the standard weights needs images above ~160 px (5 scales, 11-px Gaussian).
At 16-128 px we keep the standard kernel where it fits and otherwise take fewer scales (at least 3,
with the first standard weights renormalized to sum to 1) and then a smaller odd kernel (sigma scaled
with it); `msssim_settings` says what a resolution gets, and the protocol records it.
"""

import itertools

import numpy as np
import torch

STANDARD_BETAS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
STANDARD_KERNEL, STANDARD_SIGMA = 11, 1.5
MIN_SCALES = 3


def _fits(resolution: int, scales: int, kernel: int) -> bool:
    # torchmetrics' own size checks (functional/image/ssim.py, _multiscale_ssim_update)
    return resolution >= 2 ** scales and resolution // max(1, scales - 1) ** 2 > kernel - 1


def msssim_settings(resolution: int) -> dict:
    """{"scales", "betas", "kernel_size", "sigma"} for square images of this size."""
    scales = next((s for s in range(len(STANDARD_BETAS), MIN_SCALES - 1, -1)
                   if _fits(resolution, s, STANDARD_KERNEL)), MIN_SCALES)
    kernel = STANDARD_KERNEL
    while kernel > 1 and not _fits(resolution, scales, kernel):
        kernel -= 2
    if kernel < 3 or not _fits(resolution, scales, kernel):
        raise ValueError(f"images of {resolution} px are too small for MS-SSIM ({MIN_SCALES} scales need >= 16 px)")
    betas = np.asarray(STANDARD_BETAS[:scales])
    return {"scales": scales, "betas": tuple(float(b) for b in betas / betas.sum()), "kernel_size": kernel,
            "sigma": STANDARD_SIGMA * kernel / STANDARD_KERNEL}


def msssim(images_a, images_b) -> torch.Tensor:
    """float64 [N] MS-SSIM of row-aligned uint8 [N, 3, H, W] image pairs (settings from msssim_settings)."""
    from torchmetrics.functional.image import multiscale_structural_similarity_index_measure as ms_ssim

    a = torch.as_tensor(images_a).double().div(255.0)
    b = torch.as_tensor(images_b).double().div(255.0)
    settings = msssim_settings(min(a.shape[-2:]))
    return ms_ssim(a, b, kernel_size=settings["kernel_size"], sigma=settings["sigma"], betas=settings["betas"],
                   data_range=1.0, reduction="none")


def pairwise_msssim(images_uint8) -> float:
    """Mean MS-SSIM over all pairs of uint8 [S, 3, H, W] images (S >= 2) of one caption."""
    images = torch.as_tensor(images_uint8)
    if images.shape[0] < 2:
        raise ValueError("pairwise MS-SSIM needs at least 2 images")
    first, second = zip(*itertools.combinations(range(images.shape[0]), 2))
    return float(msssim(images[list(first)], images[list(second)]).mean())
