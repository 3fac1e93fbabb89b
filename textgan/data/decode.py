"""Decoding stored samples into tensors: shared by the loader and the feature precompute,
so that features read from shards and features computed during training see the same pixels."""

import io
from typing import Optional

import numpy as np
import torch
from PIL import Image, ImageOps


def decode_jpeg(data: bytes, fit_to: Optional[int] = None) -> np.ndarray:
    """JPEG (or any PIL-readable) bytes -> uint8 array [H, W, 3], RGB. fit_to=R: an image that is not
    R x R is center-cropped to a square and resized to R x R (Lanczos), as shards indexed from other
    tools may hold any size; one that is R x R is returned as stored."""
    with Image.open(io.BytesIO(data)) as img:
        rgb = img.convert("RGB")
        if fit_to is not None and rgb.size != (fit_to, fit_to):
            rgb = ImageOps.fit(rgb, (fit_to, fit_to), method=Image.Resampling.LANCZOS)
        return np.asarray(rgb, dtype=np.uint8).copy()


def to_float_image(pixels) -> torch.Tensor:
    """uint8 [H, W, 3] (numpy or tensor) or a stack [B, H, W, 3] -> float32 [.., 3, H, W] in [-1, 1]."""
    t = torch.as_tensor(pixels)
    t = t.permute(2, 0, 1) if t.ndim == 3 else t.permute(0, 3, 1, 2)
    return t.to(torch.float32).div_(127.5).sub_(1.0)
